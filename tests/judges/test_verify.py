"""The OCR verifier, the typeset stage and the render/verify commands, on real images."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from genevolve.cli import app
from genevolve.judges.verify import (
    canonical, compact, match_constraint, normalise, substring_distance, verify_image,
)
from genevolve.program import Constraint, Program
from genevolve.renderers import make_renderer, render_with_report
from genevolve.renderers.typeset import typeset

PHOTOS = Path(skimage.data.__file__).parent


def _prog(texts, prompt="a poster"):
    return Program(gen_prompt=prompt, constraints=[Constraint(kind="text", text=t) for t in texts])


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_normalisation_ignores_case_accents_spacing_and_punctuation():
    assert normalise("  Café —  Crème!  ") == "cafe creme"
    assert compact("Dress code: chrome") == compact("DRESS CODE chrome") == "dresscodechrome"
    assert canonical("1l0o") == "lloo"


def test_substring_distance_is_the_best_substring_edit_distance():
    rng = random.Random(0)
    for _ in range(60):
        p = "".join(rng.choice("abc") for _ in range(rng.randint(1, 5)))
        t = "".join(rng.choice("abc") for _ in range(rng.randint(0, 8)))
        brute = min(_levenshtein(p, t[i:j]) for i in range(len(t) + 1) for j in range(i, len(t) + 1))
        d, s, e = substring_distance(p, t)
        assert d == brute, (p, t)
        assert _levenshtein(p, t[s:e]) == d


def test_matching_joins_wrapped_lines_and_reports_the_closest_miss():
    lines = ["GRAND", "OPENING", "Sale starts", "Monday at 9"]
    hit = match_constraint("Grand Opening", lines)
    assert hit["found"] and hit["edit_distance"] == 0 and hit["best_match"] == "GRAND / OPENING"
    wrapped = match_constraint("Sale starts Monday at 9", lines)
    assert wrapped["found"] and wrapped["similarity"] == 1.0
    miss = match_constraint("PARIS", ["PARSI 2026"])  # "PARS" + a missing I
    assert not miss["found"] and miss["edit_distance"] == 1 and 0 < miss["similarity"] < 1
    # Every string must be exact: one wrong letter in a long slogan is a misspelling a reader sees,
    # reported as a near match, not passed.
    long = "Fresh roasted beans every single morning"
    slip = match_constraint(long, [long.replace("every", "evory")])
    assert not slip["found"] and slip["status"] == "near"
    assert not match_constraint("SALE", ["SALF"])["found"]
    # Confusable glyphs (1/l, 0/O) are one character to the verifier.
    assert match_constraint("Saturday 11 PM", ["Saturday 1l PM"])["found"]
    assert not match_constraint("anything", [])["found"]


def test_real_ocr_tells_a_misspelt_render_from_a_correct_one(tmp_path):
    renderer = make_renderer("layout")
    wrong = renderer.render(_prog(["PARSI", "Spring edition"]), size=(768, 768), seed=1)
    path = tmp_path / "wrong.png"
    wrong.save(path)
    result = verify_image(path, _prog(["PARIS", "Spring edition"]))
    by_text = {c["text"]: c for c in result["constraints"]}
    assert not by_text["PARIS"]["found"] and by_text["PARIS"]["edit_distance"] >= 1
    assert by_text["Spring edition"]["found"]
    assert result["text_score"] == 0.5
    assert "PARSI" in " ".join(result["ocr_text"]) and result["elapsed_s"] > 0
    # No text constraints: nothing to score (the OCR still runs and reports what it read).
    none = verify_image(wrong, Program(gen_prompt="a poster"))
    assert none["text_score"] is None and none["constraints"] == []


def test_typeset_sets_exact_text_in_the_calm_band_of_a_photo():
    photo = Image.open(PHOTOS / "coffee.png").convert("RGB").resize((768, 512))
    # Make the top busy with texture and the bottom flat: the text must go to the bottom.
    arr = np.asarray(photo).copy()
    arr[: 256] = np.random.default_rng(0).integers(0, 255, arr[:256].shape, dtype=np.uint8)
    arr[400:] = (200, 180, 150)
    busy = Image.fromarray(arr)
    texts = ["GRAND OPENING", "Saturday, doors at 10"]
    out, info = typeset(busy, texts)
    assert info["region"] == "bottom" and out.size == busy.size
    assert np.array_equal(np.asarray(out)[:150], arr[:150])  # the subject side is untouched
    result = verify_image(out, _prog(texts))
    assert result["text_score"] == 1.0, result["ocr_text"]


def test_render_with_report_typeset_flags(tmp_path):
    layout = make_renderer("layout")
    image, report = render_with_report(layout, _prog(["Hello"]), size=(512, 384), seed=2, typeset=True)
    assert report["backend"] == "layout" and report["typeset"] is False
    assert "typeset skipped" in report["warnings"][0]
    assert (report["width"], report["height"], report["seed"]) == (512, 384, 2) and report["elapsed_s"] >= 0


def test_render_and_verify_commands(tmp_path):
    photo = tmp_path / "refs" / "cat.png"
    photo.parent.mkdir()
    Image.open(PHOTOS / "chelsea.png").save(photo)
    prog_path = tmp_path / "program.json"
    # The official answer JSON plus a relative reference path: constraints are derived from the
    # quoted strings in gen_prompt.
    prog_path.write_text(json.dumps({
        "gen_prompt": 'An adoption poster with the first reference image on the left, titled "Meet Chelsea" '
                      'with the line "Adopt a friend today"',
        "reference_images": [{"img_id": "IMG_001", "note": "the cat", "path": "refs/cat.png"}],
    }))
    out = tmp_path / "poster.png"
    runner = CliRunner()
    res = runner.invoke(app, ["render", str(prog_path), "--out", str(out), "--size", "960x540", "--seed", "4", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["backend"] == "layout" and Image.open(out).size == (960, 540)
    res = runner.invoke(app, ["verify", str(out), "--program", str(prog_path)])
    assert res.exit_code == 0, res.output
    result = json.loads(res.output)
    assert [c["text"] for c in result["constraints"]] == ["Meet Chelsea", "Adopt a friend today"]
    assert result["text_score"] == 1.0, result["ocr_text"]
    # A reference that does not exist: exit code 2 and a message that says what to do.
    prog_path.write_text(json.dumps({"gen_prompt": '"X"', "reference_images": [{"img_id": "IMG_001", "path": "gone.png"}]}))
    res = runner.invoke(app, ["render", str(prog_path), "--out", str(out)])
    assert res.exit_code == 2 and "file not found" in res.output and "check the path" in res.output


def _program_file(tmp_path) -> Path:
    path = tmp_path / "program.json"
    path.write_text(json.dumps({"gen_prompt": 'A shop sign that says "OPEN"', "reference_images": []}))
    return path


def _one_error_line(res) -> str:
    """The CLI's answer to bad input: exit 2, no traceback, one line starting with 'error:'."""
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_render_refuses_bad_out_paths_before_rendering(tmp_path):
    prog = _program_file(tmp_path)
    (tmp_path / "a_file.txt").write_text("not a folder")
    runner = CliRunner()
    cases = {
        tmp_path / "poster.xyz": "unknown image extension '.xyz'",
        tmp_path / "poster": "unknown image extension '(none)'",
        tmp_path: "is a folder; give a file name such as",
        tmp_path / "a_file.txt" / "poster.png": "is a file, not a folder",
        tmp_path / ("x" * 300 + ".png"): "File name too long",
    }
    for out, says in cases.items():
        line = _one_error_line(runner.invoke(app, ["render", str(prog), "--out", str(out)]))
        assert says in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file.txt", "program.json"]  # nothing half-written


def test_render_writes_jpeg_and_webp_by_extension(tmp_path):
    prog = _program_file(tmp_path)
    runner = CliRunner()
    for name, fmt in [("p.jpg", "JPEG"), ("p.JPEG", "JPEG"), ("p.webp", "WEBP"), ("sub/p.png", "PNG")]:
        res = runner.invoke(app, ["render", str(prog), "--out", str(tmp_path / name), "--size", "320x240"])
        assert res.exit_code == 0, res.output
        with Image.open(tmp_path / name) as im:
            assert im.format == fmt and im.size == (320, 240)


def test_verify_answers_bad_images_with_one_line(tmp_path):
    prog = _program_file(tmp_path)
    runner = CliRunner()
    (tmp_path / "notes.png").write_text("this is text, not a PNG")
    good = tmp_path / "good.png"
    Image.new("RGB", (400, 300), (250, 250, 250)).save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    # A decompression bomb: 144 million pixels in a ~20 KB file (1.8 GB once decoded as RGB+).
    Image.new("1", (12000, 12000)).save(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 1_000_000
    cases = {"notes.png": "is not an image", "truncated.png": "is truncated or corrupt",
             "bomb.png": "12000x12000 (144 MP), over the 40 MP budget; downscale it first",
             "missing.png": "image not found"}
    for name, says in cases.items():
        line = _one_error_line(runner.invoke(app, ["verify", str(tmp_path / name), "--program", str(prog)]))
        assert says in line, line


def test_the_pixel_budget_refuses_a_png_and_decodes_a_jpeg_at_reduced_scale(tmp_path):
    from genevolve.judges.verify import ImageInputError, open_image_checked

    Image.new("RGB", (2000, 1600), (10, 20, 30)).save(tmp_path / "big.png")
    Image.new("RGB", (2000, 1600), (10, 20, 30)).save(tmp_path / "big.jpg")
    with pytest.raises(ImageInputError, match="over the 1 MP budget"):
        open_image_checked(tmp_path / "big.png", max_pixels=1_000_000)
    small = open_image_checked(tmp_path / "big.jpg", max_pixels=1_000_000)
    assert small.size == (250, 200) and small.mode == "RGB"
    assert open_image_checked(tmp_path / "big.png").size == (2000, 1600)  # under the default budget


def test_a_wrapped_title_beside_a_label_is_still_found():
    """Reading order interleaves a side label with a title wrapped over three lines; columns rejoin it."""
    from genevolve.judges.verify import match_constraint

    lines = [{"text": "HAPPY", "box": [40, 100, 300, 160]}, {"text": "Times", "box": [620, 110, 760, 150]},
             {"text": "NEW", "box": [40, 180, 200, 240]}, {"text": "Square", "box": [610, 190, 770, 230]},
             {"text": "YEAR", "box": [40, 260, 240, 320]}]
    texts = [ln["text"] for ln in lines]
    assert not match_constraint("HAPPY NEW YEAR", texts)["found"]  # reading order alone splits it
    found = match_constraint("HAPPY NEW YEAR", texts, lines)
    assert found["found"] and found["edit_distance"] == 0


def test_the_labelled_set_measures_precision_and_recall():
    """The measuring script runs on its own set: plain words in three fonts are all found, and
    their one-letter variants and other phrases are all rejected."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("verify_labelled", Path(__file__).parents[2] / "benchmarks" / "verify_labelled.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cases = mod.build_set(limit=8)
    m = mod.measure(cases)
    assert m["tp"] + m["fn"] == 8 and m["fp"] + m["tn"] == 16
    assert m["precision"] == 1.0 and m["recall"] == 1.0, (m["misses"], m["false_passes"])
    assert "| precision of \"found\" | 1.000" in mod.report_md(m)
