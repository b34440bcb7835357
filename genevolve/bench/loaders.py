"""Benchmark loaders: every source becomes a list of case dicts in the bench-row format.

A case is ``{"id", "question", "gt_image", "eval_type", "category", "difficulty", ...}``;
unknown fields are kept, ``prompt`` is accepted for ``question``, ``gt_image`` and
``images`` (user reference images) are resolved to absolute paths against the bench root.

Sources (``load_bench``): ``mini`` (the shipped mini bench), a ``.jsonl`` file, a WISE
``.json`` file (a list of {Prompt, Explanation, Category, Subcategory, prompt_id}), a ``.txt``
prompt list (one prompt a line), or a directory (``cases.jsonl`` / ``*.jsonl`` inside it, or
any layout the ``datasets`` library reads locally, e.g. parquet shards with an image column).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from genevolve.config import EXAMPLES

MINI_BENCH = EXAMPLES / "bench_mini" / "cases.jsonl"


class BenchFormatError(ValueError):
    """A bench file does not have the expected shape; the message says which row and why."""


def _json_kind(value) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BenchFormatError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None


def normalize_case(row: dict, root: Path | None, index: int) -> dict:
    if not isinstance(row, dict):
        raise BenchFormatError(f"case {index}: is {_json_kind(row)}; each case must be a JSON object "
                               'like {"id": "c1", "question": "a poster of ..."}')
    case = dict(row)
    if case.get("question") is None:
        q = case.get("prompt") if case.get("prompt") is not None else case.get("Prompt")
        case["question"] = q
    if not isinstance(case.get("question"), str) or not case["question"].strip():
        raise BenchFormatError(f"case {index}: no 'question' (or 'prompt') text")
    case["id"] = str(case.get("id") if case.get("id") is not None else f"case_{index:04d}")
    for key in ("eval_type", "category", "difficulty"):
        case.setdefault(key, None)
    case.setdefault("gt_image", None)
    gt = case.get("gt_image")
    if isinstance(gt, str) and gt.strip() and root is not None and not Path(gt).is_absolute():
        case["gt_image"] = str((root / gt).resolve())
    images = case.get("images") or []
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise BenchFormatError(f"case {index} ('{case['id']}'): 'images' must be a path or a list of paths")
    case["images"] = [str((root / p).resolve()) if root is not None and isinstance(p, str)
                      and not Path(p).is_absolute() else p for p in images]
    return case


def _check_ids(cases: list[dict]) -> list[dict]:
    seen: set[str] = set()
    for c in cases:
        if c["id"] in seen:
            raise BenchFormatError(f"duplicate case id '{c['id']}'")
        seen.add(c["id"])
    return cases


def load_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    cases = []
    for i, line in enumerate(_read_text(path).splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchFormatError(f"{path}:{i + 1}: not JSON ({exc.msg})") from exc
        try:
            cases.append(normalize_case(row, path.parent, len(cases)))
        except BenchFormatError as exc:
            raise BenchFormatError(f"{path}:{i + 1}: {exc}") from None
    return _check_ids(cases)


def load_wise(path: str | Path) -> list[dict]:
    """WISE_Verified json: a list (or {"data": [...]}) of Prompt/Explanation/Category rows."""
    from genevolve.judges.wise import wise_category

    path = Path(path)
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise BenchFormatError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if isinstance(data, dict):
        data = data.get("data") or data.get("prompts") or next((v for v in data.values() if isinstance(v, list)), [])
    if not isinstance(data, list):
        raise BenchFormatError(f"{path}: is {_json_kind(data)}; a WISE .json file holds a list of "
                               '{"Prompt": ..., "Category": ...} objects (use .jsonl for bench rows)')
    cases = []
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise BenchFormatError(f"{path}: row {i} is {_json_kind(row)}, not an object with 'Prompt'")
        if not row.get("Prompt"):
            raise BenchFormatError(f"{path}: row {i} has no 'Prompt'")
        pid = row.get("prompt_id", i + 1)
        case = {k: v for k, v in row.items() if k not in ("Prompt", "Explanation", "Category", "Subcategory")}
        case.update({"id": f"wise_{pid}", "question": row["Prompt"], "explanation": row.get("Explanation", ""),
                     "category": row.get("Category"), "subcategory": row.get("Subcategory"),
                     "wise_category": wise_category(f"{row.get('Category') or ''} {row.get('Subcategory') or ''}"), "eval_type": "wise",
                     "difficulty": None, "gt_image": None, "prompt_id": pid})
        cases.append(normalize_case(case, path.parent, i))
    return _check_ids(cases)


def load_prompt_list(path: str | Path) -> list[dict]:
    path = Path(path)
    prompts = [ln.strip() for ln in _read_text(path).splitlines()
               if ln.strip() and not ln.lstrip().startswith("#")]
    return [normalize_case({"id": f"p{i + 1:04d}", "question": p, "eval_type": "prompt"}, path.parent, i)
            for i, p in enumerate(prompts)]


def load_directory(path: str | Path) -> list[dict]:
    path = Path(path)
    for name in ("cases.jsonl", "bench.jsonl", "data.jsonl"):
        if (path / name).is_file():
            return load_jsonl(path / name)
    jsonls = sorted(path.glob("*.jsonl"))
    if len(jsonls) == 1:
        return load_jsonl(jsonls[0])
    return load_datasets_dir(path)


def load_datasets_dir(path: str | Path, split: str | None = None) -> list[dict]:
    """A local dataset directory read by ``datasets`` (parquet/json/csv shards, image columns).

    Image columns (PIL images) are written once to ``<dir>/.gt_cache/<id>.png`` so the runner
    and judges can treat them as files.
    """
    import datasets

    path = Path(path)
    ds = datasets.load_dataset(str(path))
    if isinstance(ds, datasets.DatasetDict):
        split = split or ("test" if "test" in ds else next(iter(ds)))
        ds = ds[split]
    cache = path / ".gt_cache"
    cases = []
    for i, row in enumerate(ds):
        row = dict(row)
        rid = str(row.get("id") if row.get("id") is not None else f"case_{i:04d}")
        for key, value in list(row.items()):
            if hasattr(value, "save") and hasattr(value, "size"):  # a PIL image
                cache.mkdir(exist_ok=True)
                safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{rid}_{key}")
                out = cache / f"{safe}.png"
                if not out.exists():
                    value.save(out)
                row[key] = str(out)
            elif isinstance(value, list) and value and all(hasattr(v, "save") for v in value):
                cache.mkdir(exist_ok=True)
                paths = []
                for j, im in enumerate(value):
                    out = cache / re.sub(r"[^A-Za-z0-9_.-]", "_", f"{rid}_{key}_{j}.png")
                    if not out.exists():
                        im.save(out)
                    paths.append(str(out))
                row[key] = paths
        cases.append(normalize_case(row, path, i))
    return _check_ids(cases)


def load_bench(spec: str | Path) -> list[dict]:
    """Cases from ``mini`` or a path (see the module docstring for the formats)."""
    if str(spec) == "mini":
        return load_jsonl(MINI_BENCH)
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"bench not found: {path} (use 'mini', a .jsonl/.json/.txt file or a directory)")
    if path.is_dir():
        return load_directory(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return load_jsonl(path)
    if suffix == ".json":
        return load_wise(path)
    if suffix == ".txt":
        return load_prompt_list(path)
    raise BenchFormatError(f"unknown bench file type '{suffix}': use .jsonl, .json (WISE) or .txt")
