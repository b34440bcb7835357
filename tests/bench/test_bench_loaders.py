"""Bench loaders: the shipped mini bench, jsonl, WISE json, prompt lists, datasets directories."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from genevolve.bench.loaders import BenchFormatError, load_bench

KNOWLEDGE = {"architecture_landmark", "street_view", "public_figure", "product", "vehicle", "event", "science",
             "cultural_relic"}
QUALITY = {"text_layout", "spatial_relation", "counting", "anatomy", "attribute_binding", "material", "aesthetics",
           "creative_transformation"}


def test_mini_bench_shape():
    cases = load_bench("mini")
    assert len(cases) >= 32
    assert len({c["id"] for c in cases}) == len(cases)
    per_cat = Counter(c["category"] for c in cases)
    assert set(per_cat) == KNOWLEDGE | QUALITY and min(per_cat.values()) >= 2
    for c in cases:
        assert c["track"] == ("knowledge" if c["category"] in KNOWLEDGE else "quality")
        assert c["difficulty"] in ("easy", "medium", "hard")
        assert c["eval_type"] == ("text_image" if c["images"] else "text")
        for p in [c["gt_image"], *c["images"]]:
            if p is not None:
                assert Path(p).is_file(), f"{c['id']}: {p} is missing"
    assert sum(bool(c["images"]) for c in cases) >= 3
    gts = [c for c in cases if c["gt_image"]]
    assert 1 <= len(gts) < len(cases)  # honest GT only where we have the real subject
    assert any('"' in c["question"] for c in cases if c["category"] == "text_layout")


def test_jsonl_rows_prompt_alias_unknown_fields_and_gt(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "gt.png")
    rows = [{"id": 7, "prompt": "a red fox", "gt_image": "gt.png", "eval_type": "t2i", "category": "animal",
             "difficulty": "easy", "source": "ours"},
            {"question": "a blue bird"}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    a, b = load_bench(tmp_path / "b.jsonl")
    assert a["id"] == "7" and a["question"] == "a red fox" and a["source"] == "ours"
    assert a["gt_image"] == str((tmp_path / "gt.png").resolve())
    assert b["id"] == "case_0001" and b["gt_image"] is None and b["category"] is None
    # A directory with one cases.jsonl reads the same way.
    (tmp_path / "b.jsonl").rename(tmp_path / "cases.jsonl")
    assert [c["id"] for c in load_bench(tmp_path)] == ["7", "case_0001"]


@pytest.mark.parametrize("lines,reason", [
    (['{"id": "a", "category": "x"}'], "case 0: no 'question'"),
    (['{"id": "a", "question": "q"}', '{"id": "a", "question": "r"}'], "duplicate case id 'a'"),
    (['{"id": "a", "question": "q"', ], "not JSON"),
    (['["a red kite", "a blue kite"]'], r"bad.jsonl:1: case 0: is an array; each case must be a JSON object"),
    (['{"id": "a", "question": "q"}', '"a red kite"'], r"bad.jsonl:2: case 1: is a string; each case must be"),
    (['{"id": "a", "question": "q"}', '', '42'], r"bad.jsonl:3: case 1: is a number"),
    (['{"id": "a", "question": "q", "images": 5}'], r"'images' must be a path or a list of paths"),
])
def test_bad_jsonl_says_why(tmp_path, lines, reason):
    (tmp_path / "bad.jsonl").write_text("\n".join(lines))
    with pytest.raises(BenchFormatError, match=reason):
        load_bench(tmp_path / "bad.jsonl")


def test_wise_json_and_prompt_list(tmp_path):
    wise = [{"prompt_id": 1, "Prompt": "The tower built for the 1889 World's Fair", "Explanation": "Eiffel Tower",
             "Category": "Cultural knowledge", "Subcategory": "Landmarks"},
            {"prompt_id": 2, "Prompt": "Water at -10 degrees Celsius", "Explanation": "ice",
             "Category": "Natural science", "Subcategory": "Physics"}]
    (tmp_path / "wise.json").write_text(json.dumps(wise))
    cases = load_bench(tmp_path / "wise.json")
    assert [c["id"] for c in cases] == ["wise_1", "wise_2"]
    assert cases[0]["explanation"] == "Eiffel Tower" and cases[0]["wise_category"] == "culture"
    assert cases[1]["subcategory"] == "Physics" and cases[1]["eval_type"] == "wise"
    (tmp_path / "p.txt").write_text("# my prompts\na cat\n\na dog on a skateboard\n")
    ps = load_bench(tmp_path / "p.txt")
    assert [p["question"] for p in ps] == ["a cat", "a dog on a skateboard"] and ps[0]["id"] == "p0001"
    with pytest.raises(FileNotFoundError):
        load_bench(tmp_path / "nope.jsonl")


def test_datasets_directory_with_image_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"id": ["x1", "x2"], "question": ["a red square", "a green square"],
         "gt_image": [Image.new("RGB", (16, 16), "red"), Image.new("RGB", (16, 16), "green")],
         "category": ["color", "color"]},
        features=datasets.Features({"id": datasets.Value("string"), "question": datasets.Value("string"),
                                    "gt_image": datasets.Image(), "category": datasets.Value("string")}))
    d = tmp_path / "bench"
    (d / "data").mkdir(parents=True)
    ds.to_parquet(str(d / "data" / "test-00000.parquet"))
    cases = load_bench(d)
    assert [c["id"] for c in cases] == ["x1", "x2"]
    with Image.open(cases[1]["gt_image"]) as im:
        assert im.getpixel((3, 3)) == (0, 128, 0)


@pytest.mark.parametrize("name,data,reason", [
    ("bench.json", b'"a red kite"', r"is a string; a WISE .json file holds a list"),
    ("bench.json", b"[1]", r"row 0 is a number, not an object with 'Prompt'"),
    ("bench.json", b"[{", r"not JSON"),
    ("bench.jsonl", b'{"id": "a", "question": "caf\xe9"}', r"not UTF-8 text \(byte 28\); save the file as UTF-8"),
    ("bench.txt", b"a red kite\n\xff", r"not UTF-8 text"),
])
def test_bad_bench_files_say_what_to_fix(tmp_path, name, data, reason):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(BenchFormatError, match=reason):
        load_bench(tmp_path / name)


def test_bench_run_answers_a_bad_line_with_one_error_line(tmp_path):
    from typer.testing import CliRunner

    from genevolve.cli import app

    (tmp_path / "cases.jsonl").write_text('["a red kite"]\n')
    res = CliRunner().invoke(app, ["bench", "run", "--bench", str(tmp_path / "cases.jsonl"),
                                   "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 2 and (res.exception is None or isinstance(res.exception, SystemExit))
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cases.jsonl:1" in lines[0], res.output
    assert not (tmp_path / "run").exists()
