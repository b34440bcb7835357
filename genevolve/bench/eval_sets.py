"""Evaluation sets written by others: loaded as bench rows, used only for evaluation, never for training.

Vendored under ``genevolve/bench/data/external`` (licence and provenance in its PROVENANCE.md):

* ``parti`` — PartiPrompts (1,632 prompts; ``category`` is the challenge tag, ``domain`` the
  topic category);
* ``geneval`` — GenEval's evaluation metadata (553 prompts; ``category`` is the tag; ``expect``
  holds the objects with their counts, colours and positions);
* ``t2i-compbench`` — T2I-CompBench validation prompts (colour, shape, texture, spatial,
  non_spatial, complex; 300 each);
* ``official-examples`` — the example prompts of the official GenEvolve release.

``wise:PATH`` reads WISE from the user's own copy (the upstream repository has no licence file,
so nothing of it is stored here): a ``*.json`` file or its ``data_verified`` folder. ``all`` is
every vendored set. Any other value is read by ``genevolve.bench.loaders.load_bench``.

Every case gets ``set`` (the set's name) and an id prefixed by it, so ids stay unique across sets.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from genevolve.bench.loaders import BenchFormatError, _check_ids, load_bench, load_wise, normalize_case

EXTERNAL = Path(__file__).resolve().parent / "data" / "external"
VENDORED = ("parti", "geneval", "t2i-compbench", "official-examples")
COMPBENCH_CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex")

# The skill each category plainly needs (the eval's "skills the category needs"). Categories not
# listed need no particular skill (single objects, world knowledge, imagination...).
CATEGORY_SKILLS: dict[str, tuple[str, ...]] = {
    # GenEval tags
    "counting": ("quantity_counting",),
    "position": ("spatial_layout",),
    "colors": ("attribute_binding",),
    "color_attr": ("attribute_binding",),
    # T2I-CompBench
    "color": ("attribute_binding",),
    "shape": ("attribute_binding",),
    "texture": ("physical_material_consistency",),
    "spatial": ("spatial_layout",),
    # PartiPrompts challenges
    "Quantity": ("quantity_counting",),
    "Writing & Symbols": ("text_rendering",),
}


def needed_skills(case: dict) -> list[str]:
    return list(CATEGORY_SKILLS.get(str(case.get("category") or ""), ()))


def _case(set_name: str, index: int, row: dict) -> dict:
    row = {"set": set_name, "eval_type": "program", "difficulty": None, **row}
    row["id"] = f"{set_name}/{row.get('id') or f'{index + 1:04d}'}"
    return normalize_case(row, None, index)


def load_parti(root: Path = EXTERNAL / "parti") -> list[dict]:
    text = (root / "PartiPrompts.tsv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    return [_case("parti", i, {"question": r["Prompt"], "category": r["Challenge"], "domain": r["Category"],
                               "note": r.get("Note") or None})
            for i, r in enumerate(rows) if (r.get("Prompt") or "").strip()]


def geneval_expectations(include: list[dict]) -> dict:
    """GenEval's ``include`` as the things a program must state: counts, colours, positions."""
    counts, colours, positions = [], [], []
    for obj in include:
        name = obj["class"]
        counts.append({"object": name, "count": int(obj.get("count", 1))})
        if obj.get("color"):
            colours.append({"object": name, "colour": obj["color"]})
        if obj.get("position"):
            relation, anchor = obj["position"]
            positions.append({"object": name, "relation": relation, "anchor": include[int(anchor)]["class"]})
    return {"counts": counts, "colours": colours, "positions": positions}


def load_geneval(root: Path = EXTERNAL / "geneval") -> list[dict]:
    cases = []
    for i, line in enumerate((root / "evaluation_metadata.jsonl").read_text(encoding="utf-8").splitlines()):
        if line.strip():
            r = json.loads(line)
            cases.append(_case("geneval", i, {"question": r["prompt"], "category": r["tag"],
                                              "expect": geneval_expectations(r["include"])}))
    return cases


def load_compbench(root: Path = EXTERNAL / "t2i_compbench") -> list[dict]:
    cases = []
    for cat in COMPBENCH_CATEGORIES:
        lines = [ln.strip() for ln in (root / f"{cat}_val.txt").read_text(encoding="utf-8").splitlines()]
        cases += [_case("t2i-compbench", len(cases), {"id": f"{cat}_{i + 1:03d}", "question": q, "category": cat})
                  for i, q in enumerate(ln for ln in lines if ln)]
    return cases


def load_official_examples(root: Path = EXTERNAL / "official_examples") -> list[dict]:
    cases = []
    for i, line in enumerate((root / "example_prompts.jsonl").read_text(encoding="utf-8").splitlines()):
        if line.strip():
            r = json.loads(line)
            cases.append(_case("official-examples", i, {"id": r.get("id"), "question": r["prompt"],
                                                        "category": "official-example"}))
    return cases


def load_wise_set(path: str | Path) -> list[dict]:
    """WISE from the user's copy: one ``.json`` file, or a folder of them (``*_verified.json``
    preferred, so a merged file beside the parts is not read twice)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"WISE data not found: {path} (give a WISE .json file or its data_verified folder)")
    files = [path] if path.is_file() else (sorted(path.glob("*_verified.json")) or sorted(path.glob("*.json")))
    if not files:
        raise BenchFormatError(f"{path}: no WISE .json files in this folder")
    cases, seen = [], set()
    for f in files:
        for c in load_wise(f):
            if c["id"] in seen:
                continue
            seen.add(c["id"])
            c.update({"set": "wise", "category": c.get("wise_category") or c.get("category"),
                      "id": f"wise/{c['prompt_id']}", "eval_type": "program"})
            cases.append(c)
    return _check_ids(cases)


_LOADERS = {"parti": load_parti, "geneval": load_geneval, "t2i-compbench": load_compbench,
            "official-examples": load_official_examples}


def load_eval_set(spec: str) -> list[dict]:
    """Cases of a named set (see the module docstring), ``wise:PATH``, ``all``, or any bench path."""
    spec = str(spec).strip()
    if spec in _LOADERS:
        return _LOADERS[spec]()
    if spec == "all":
        return _check_ids([c for name in VENDORED for c in _LOADERS[name]()])
    if spec.startswith("wise:"):
        return load_wise_set(spec[len("wise:"):])
    if not Path(spec).expanduser().exists():
        raise FileNotFoundError(f"unknown eval set '{spec}': use {', '.join(VENDORED)}, all, wise:PATH "
                                "or a bench file/folder")
    cases = load_bench(spec)
    for c in cases:
        c.setdefault("set", Path(spec).stem)
    return cases
