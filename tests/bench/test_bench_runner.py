"""The bench runner end to end: the full mini bench offline, API judges, failure accounting."""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.chat_server import ChatServer  # noqa: E402

from genevolve.bench.loaders import load_bench  # noqa: E402
from genevolve.bench.runner import BenchConfig, BenchRunner, RunDirError, read_jsonl  # noqa: E402
from genevolve.bench.summary import write_summary  # noqa: E402
from genevolve.cli import app  # noqa: E402

GOOD = {"constraints": ["a"], "rationale": "ok", "faithfulness": 1, "visual_correctness": 1, "text_accuracy": 0.5,
        "text_accuracy_na": False, "aesthetics": 0.5}


def test_full_mini_bench_offline(tmp_path):
    """planner + layout + local judge over every mini-bench case, parallel 2, through the CLI."""
    out = tmp_path / "mini"
    # Library ranking by BM25 alone (no embedding model to load) and a smaller canvas keep CI quick.
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"extra": {"library_embeddings": False}}))
    result = CliRunner().invoke(app, ["bench", "run", "--bench", "mini", "--out", str(out), "--parallel", "2",
                                      "--offline", "--no-progress", "--size", "512x512", "--config", str(config)])
    assert result.exit_code == 0, result.output
    ids = [c["id"] for c in load_bench("mini")]
    for stage in ("rollout", "render", "judge"):
        rows = read_jsonl(out / f"{stage}.jsonl")
        assert sorted(r["id"] for r in rows) == sorted(ids), stage
    for cid in ids:
        d = out / "cases" / cid
        assert {"trajectory.json", "program.json", "image.png", "scores.json"} <= {p.name for p in d.iterdir()}
    s = json.loads((out / "summary.json").read_text())
    assert s["cases"] == len(ids) and s["scored"] + s["failed"] + s["missing"] == len(ids)
    assert s["scored"] >= len(ids) - 2  # the planner answers every case offline
    assert 0 <= s["overall"] <= 1 and s["overall_missing_zero"] <= s["overall"]
    # The local judge cannot see: visual dimensions are not measured, never zero.
    assert s["visual_correctness"] is None and s["visual_correctness_n"] == 0 and s["aesthetics"] is None
    assert s["text_accuracy_n"] >= 5 and s["sufficiency_n"] == s["scored"]
    # The overall says what it covers: only the image dimensions measured (OCR text, structure).
    assert set(s["overall_parts"]) <= {"text_accuracy", "structure"} and s["structure_n"] >= 20
    assert "not measured: faithfulness, visual_correctness, aesthetics" in s["overall_note"]
    assert s["overall_n"] <= s["scored"]
    # A landmark the offline render can only label is not scored as shown (it used to score 1.0).
    opera = json.loads((out / "cases" / "ka_arch_01" / "scores.json").read_text())
    assert opera["structure"] < 1.0 and opera["details"]["structure"]["placeholders"] == ["sydney opera house"]
    assert (out / "cases" / "ka_arch_01" / "render.json").exists()
    assert len(s["by"]["category"]) == 16 and set(s["by"]["track"]) == {"knowledge", "quality"}
    assert set(s["by"]["difficulty"]) == {"easy", "medium", "hard"}
    assert s["tools"]["tool_calls"].get("search", 0) > 0 and s["tools"]["skills"]
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["group"] == "all" and {r["group"] for r in rows} >= {"category", "eval_type", "difficulty"}
    assert int(rows[0]["structure_n"]) == s["structure_n"] and rows[0]["visual_correctness_n"] == "0"
    html = (out / "report.html").read_text()
    assert 'id="overall-note"' in html and "visual_correctness (not measured)" in html
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js inline, no CDN needed
    assert '<script src="http' not in html and 'src="https://cdn' not in html
    # A second run into the same folder without --resume is refused instead of mixing results.
    again = CliRunner().invoke(app, ["bench", "run", "--out", str(out), "--limit", "1", "--no-progress"])
    assert again.exit_code == 2 and "--resume" in again.output
    summary = CliRunner().invoke(app, ["bench", "summary", str(out), "--no-html"])
    assert summary.exit_code == 0 and "architecture_landmark" in summary.output


def test_api_judge_failed_and_missing_are_counted(tmp_path):
    fast = tmp_path / "settings.json"
    fast.write_text(json.dumps({"extra": {"library_embeddings": False}}))
    bench = tmp_path / "b.jsonl"
    cases = [{"id": "good", "question": "A red bicycle leaning on a white wall", "category": "product"},
             {"id": "bad", "question": "A green kite over a beach", "category": "product"}]
    bench.write_text("".join(json.dumps(c) + "\n" for c in cases))

    def reply(body):
        text = json.dumps(body["messages"])
        return json.dumps(GOOD) if "bicycle" in text else "I refuse to grade."

    with ChatServer(reply) as server:
        cfg = BenchConfig(bench=str(bench), judge=f"kscore:vlm@{server.base_url}?retries=0", parallel=2,
                          offline=True, rpm=600, settings_path=str(fast))
        BenchRunner(load_bench(bench), tmp_path / "run", cfg, progress=False).run()
        with pytest.raises(RunDirError):
            BenchRunner(load_bench(bench), tmp_path / "run", BenchConfig(bench=str(bench), judge="local"),
                        resume=True, progress=False).run()
    assert len(server.requests) == 2
    s = write_summary(tmp_path / "run", html=False)
    assert (s["scored"], s["failed"], s["missing"]) == (1, 1, 0)
    expected = 0.1 * 1 + 0.4 * 1 + 0.4 * 0.5 + 0.1 * 0.5
    assert s["overall"] == pytest.approx(expected) and s["overall_missing_zero"] == pytest.approx(expected / 2)
    assert s["failures"][0]["id"] == "bad" and "unreadable judge reply" in s["failures"][0]["error"]

    # A policy that never answers: the case is missing (nothing to judge), not a zero score.
    replay = tmp_path / "turns.json"
    replay.write_text(json.dumps(["no protocol here", "still nothing"]))
    cfg = BenchConfig(bench=str(bench), policy=f"replay:{replay}", judge="local", parallel=1, limit=1, offline=True,
                      settings_path=str(fast))
    BenchRunner(load_bench(bench), tmp_path / "run2", cfg, progress=False).run()
    s2 = write_summary(tmp_path / "run2", html=False)
    assert (s2["scored"], s2["failed"], s2["missing"]) == (0, 0, 1) and s2["overall"] is None
    assert s2["overall_missing_zero"] == 0.0
    render = read_jsonl(tmp_path / "run2" / "render.jsonl")
    assert render[0]["status"] == "skipped"
    assert Counter(r["id"] for r in read_jsonl(tmp_path / "run2" / "judge.jsonl")) == {"good": 1}


def test_wise_run_weights_categories(tmp_path):
    fast = tmp_path / "settings.json"
    fast.write_text(json.dumps({"extra": {"library_embeddings": False}}))
    rows = [("Cultural knowledge", "The tower built for the 1889 World's Fair in Paris", 1),
            ("Spatio-temporal: Time", "A maple tree in the month of October in Canada", 1),
            ("Spatio-temporal: Space", "The view of Earth from the Moon's surface", 0),
            ("Natural science: Biology", "The larval stage of a butterfly", 1),
            ("Natural science: Physics", "A glass of water at minus ten degrees Celsius", 0),
            ("Natural science: Chemistry", "Copper sulfate crystals", 1)]
    wise = [{"prompt_id": i + 1, "Prompt": p, "Explanation": f"answer key {i + 1}", "Category": c,
             "Subcategory": "x"} for i, (c, p, _) in enumerate(rows)]
    path = tmp_path / "wise.json"
    path.write_text(json.dumps(wise))
    verdict = {f"answer key {i + 1}": v for i, (_, _, v) in enumerate(rows)}

    def reply(body):
        text = body["messages"][-1]["content"][0]["text"]
        key = next(k for k in verdict if k in text)
        return json.dumps({"rationale": "checked", "score": verdict[key]})

    with ChatServer(reply) as server:
        cfg = BenchConfig(bench=str(path), judge=f"wise:vlm@{server.base_url}", parallel=3, offline=True,
                          settings_path=str(fast))
        BenchRunner(load_bench(path), tmp_path / "run", cfg, progress=False).run()
    s = write_summary(tmp_path / "run", html=True)
    assert s["scored"] == 6 and s["wise"]["by_category"]["culture"] == 1.0
    assert s["wise"]["overall"] == pytest.approx(0.40 * 1 + 0.12 * (1 + 0 + 1 + 0 + 1))
    assert (tmp_path / "run" / "report.html").exists()
