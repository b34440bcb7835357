"""External evaluation sets: loaders, provenance, and no eval request in any training split."""

import json
from pathlib import Path

import pytest

from genevolve.bench.eval_sets import EXTERNAL, load_eval_set, needed_skills
from genevolve.data.recipes import training_overlaps

ROOT = Path(__file__).resolve().parents[2]
WISE_FIXTURE = Path(__file__).parents[1] / "helpers" / "wise_fixture.json"


def test_vendored_sets_load_with_categories_and_metadata():
    parti = load_eval_set("parti")
    assert len(parti) == 1632 and {"Quantity", "Writing & Symbols"} <= {c["category"] for c in parti}
    assert all(c["domain"] for c in parti)
    geneval = load_eval_set("geneval")
    assert len(geneval) == 553
    pos = next(c for c in geneval if c["question"] == "a photo of a dog right of a teddy bear")
    assert pos["expect"]["positions"] == [{"object": "dog", "relation": "right of", "anchor": "teddy bear"}]
    colour = next(c for c in geneval if c["category"] == "color_attr")
    assert colour["expect"]["colours"] and needed_skills(colour) == ["attribute_binding"]
    counting = next(c for c in geneval if c["category"] == "counting")
    assert any(x["count"] > 1 for x in counting["expect"]["counts"])
    comp = load_eval_set("t2i-compbench")
    assert {c["category"] for c in comp} == {"color", "shape", "texture", "spatial", "non_spatial", "complex"}
    assert len(comp) > 1700
    ex = load_eval_set("official-examples")
    assert ex[0]["id"] == "official-examples/ex01" and "Crucible Theatre" in ex[0]["question"]
    everything = load_eval_set("all")
    assert len(everything) == len(parti) + len(geneval) + len(comp) + len(ex)
    assert len({c["id"] for c in everything}) == len(everything)


def test_every_vendored_folder_has_its_licence_and_provenance():
    prov = (EXTERNAL / "PROVENANCE.md").read_text(encoding="utf-8")
    for folder, licence in (("parti", "LICENSE"), ("geneval", "LICENSE"), ("t2i_compbench", "License.txt"),
                            ("official_examples", "LICENSE")):
        assert (EXTERNAL / folder / licence).is_file()
        assert f"`{folder}/`" in prov
    assert "wise" not in {p.name.lower() for p in EXTERNAL.iterdir()}  # no licence upstream: never stored


def test_wise_reads_a_user_path_file_or_folder(tmp_path):
    cases = load_eval_set(f"wise:{WISE_FIXTURE}")
    assert [c["category"] for c in cases] == ["culture", "physics", "biology", "chemistry", "space", "time"]
    assert cases[0]["id"] == "wise/1" and cases[0]["explanation"]
    (tmp_path / "a_verified.json").write_text(WISE_FIXTURE.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "merge.json").write_text(WISE_FIXTURE.read_text(encoding="utf-8"), encoding="utf-8")
    assert len(load_eval_set(f"wise:{tmp_path}")) == 6
    with pytest.raises(FileNotFoundError, match="WISE data not found"):
        load_eval_set(f"wise:{tmp_path / 'missing'}")
    with pytest.raises(FileNotFoundError, match="unknown eval set"):
        load_eval_set("partiprompts")


def _training_requests() -> list[str]:
    from genevolve.data.recipes import generate_recipes

    # The recipes the shipped nano adapter was built from (docs/nano.md: 560 recipes, seed 0).
    requests = [r.request for r in generate_recipes(560, seed=0)]
    # And the requests with human variety the next SFT data draws from (dense paragraphs included).
    requests += [r.request for r in generate_recipes(560, seed=0, variety=0.5) if r.variety]
    for name in ("tiny_sft.jsonl", "tiny_prompts.jsonl"):
        for line in (ROOT / "configs" / "data" / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                users = [m["content"] for m in row.get("messages", []) if m.get("role") == "user"]
                requests += [u for u in users if isinstance(u, str)][:1] or [row.get("question") or row.get("prompt") or ""]
    return [r for r in requests if r]


def test_no_eval_request_is_in_any_training_split():
    cases = load_eval_set("all") + load_eval_set(f"wise:{WISE_FIXTURE}")
    train = _training_requests()
    assert len(train) > 560
    assert training_overlaps(train, cases) == []
    # The screen does catch a copy and a light paraphrase.
    planted = [cases[10]["question"].upper() + "!", "a photo of a dog to the right of a teddy bear"]
    found = training_overlaps(train + planted, cases)
    assert {req for req, _ in found} == set(planted)
