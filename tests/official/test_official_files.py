"""The official runtime's files both ways: import results.json, replay, render, export for their evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from genevolve.agent import Agent, AgentConfig
from genevolve.bench.official_export import export_bench_run
from genevolve.cli import app
from genevolve.official.records import (
    RecordError,
    import_results,
    load_results,
    record_to_trajectory,
    trajectory_to_record,
)
from genevolve.policies import make_policy
from genevolve.policies.base import PolicyError
from genevolve.store import Store
from genevolve.tools.base import Tool

SYSTEM = "[recorded system prompt] one action per round."
FINAL = "[recorded final-step message] answer now."


def _record(tmp_path: Path, rid="case-7") -> dict:
    """A result record in the official layout (our own content), its image on disk."""
    img = tmp_path / "downloads" / f"{rid}.jpg"
    img.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (30, 90, 200)).save(img)
    image_reply = (f"--- image search result for [blue door] ---\nIMG_001: title: A blue door\n"
                   f"  url: https://example.org/door.jpg\n  local_path: {img}\n  page_url: https://example.org/door\n"
                   f"--- end of image search result ---")
    return {
        "prompt": "A blue door with the number \"12\" on it.",
        "gen_prompt": "The door of the first reference image, painted blue, with the number \"12\".",
        "reference_images": [{"img_id": "IMG_001", "note": "door shape", "local_path": str(img),
                              "url": "https://example.org/door.jpg", "title": "A blue door",
                              "page_url": "https://example.org/door"}],
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "A blue door with the number \"12\" on it."},
            {"role": "assistant", "content": "<think>facts</think>\n<tool_call>\n{\"name\": \"search\", \"arguments\": "
                                             "{\"queries\": [\"blue door\"]}}\n</tool_call>"},
            {"role": "user", "content": "<tool_response>\n--- search result for [blue door] ---\n1. title: Doors\n"
                                        "  url: https://example.org/doors\n--- end of search result ---\n</tool_response>"},
            {"role": "assistant", "content": "no action here"},
            {"role": "user", "content": "<tool_response>\nFormat error: must output one <tool_call>{...}</tool_call> "
                                        "or <answer>{...}</answer>.\n</tool_response>"},
            {"role": "assistant", "content": "<think>a picture</think>\n<tool_call>\n{\"name\": \"image_search\", "
                                             "\"arguments\": {\"query\": \"blue door\"}}\n</tool_call>"},
            {"role": "user", "content": f"<tool_response>\n{image_reply}\n</tool_response>"},
            {"role": "user", "content": FINAL},
            {"role": "assistant", "content": "<answer>\n{\"gen_prompt\": \"The door of the first reference image, "
                                             "painted blue, with the number \\\"12\\\".\", \"reference_images\": "
                                             "[{\"img_id\": \"IMG_001\", \"note\": \"door shape\"}]}\n</answer>"},
        ],
        "termination": "answer", "rounds": 4, "error": None, "id": rid, "category": "objects", "eval_type": "text",
    }


@pytest.fixture
def results(tmp_path):
    path = tmp_path / "results.json"
    failed = {"prompt": "A red car.", "gen_prompt": "", "reference_images": [], "messages": [],
              "termination": "error", "rounds": 0, "error": "llm_call_failed: boom", "id": 8}
    path.write_text(json.dumps([_record(tmp_path), failed], indent=2))
    return path


def test_import_shows_steps_images_and_program_in_the_store(results, tmp_path):
    store = Store(tmp_path / "store.db")
    trajs = import_results(results, store)
    assert len(trajs) == 2 and len(store.list_runs()) == 2
    import_results(results, store)
    assert len(store.list_runs()) == 2  # re-importing updates, never duplicates
    t = store.get_trajectory(trajs[0].id)
    assert [s.kind for s in t.steps] == ["tool_call", "format_error", "tool_call", "answer"]
    assert t.steps[0].tool_name == "search" and t.steps[0].tool_text.startswith("--- search result for [blue door]")
    assert t.steps[2].tool_images == ["IMG_001"]
    assert t.images[0].url == "https://example.org/door.jpg" and Path(t.images[0].path).is_file()
    assert t.program.reference_images[0].path == t.images[0].path
    assert [c.text for c in t.program.constraints if c.kind == "text"] == ["12"]
    assert t.meta["protocol"] == "official" and t.meta["record"]["category"] == "objects"
    bad = store.get_trajectory(trajs[1].id)
    assert bad.program is None and bad.termination == "error" and "boom" in bad.reason
    run = store.get_run(trajs[1].id)
    assert run["has_errors"] and run["policy"] == "official (imported)"


def test_imported_runs_are_listed_for_annotators(results, tmp_path, monkeypatch):
    from app import inspector_tab, storage

    monkeypatch.setattr(storage, "store", lambda: Store(tmp_path / "inspector.db"))
    monkeypatch.chdir(tmp_path)  # the Inspector also indexes ./runs: a developer's own runs must not count here
    import_results(results, storage.store())
    rows, _ = inspector_tab.list_rows("any", "any", "any", "any", "any", False, "sessionANNOT1")
    col = {name: i for i, name in enumerate(inspector_tab.COLUMNS)}
    assert {r[col["termination"]] for r in rows} == {"answer", "error"}
    rows, _ = inspector_tab.list_rows("any", "error", "any", "any", "any", False, "sessionANNOT1")
    assert [r[col["request"]] for r in rows] == ["A red car."]
    # Opening one shows its steps (tool replies, the nudge, the answer); annotators can audit it.
    rows, _ = inspector_tab.list_rows("any", "answer", "any", "any", "any", False, "sessionANNOT1")
    from types import SimpleNamespace

    run_id, html, info, steps, _ = inspector_tab.open_run("sessionANNOT1", SimpleNamespace(row_value=rows[0]))
    assert "--- search result for [blue door] ---" in html and "IMG_001" in html
    assert steps["choices"][1:] == ["step 1 · tool_call · search", "step 2 · format_error",
                                    "step 3 · tool_call · image_search", "step 4 · answer"]
    inspector_tab.save_audit(run_id, "step 2", "needs_fix", "the model skipped <think>")
    assert [(a["step"], a["verdict"]) for a in storage.store().audits(run_id)] == [(2, "needs_fix")]


class MustNotRun(Tool):
    def __init__(self, name):
        self.name = name

    def __call__(self, args, ctx):
        raise AssertionError(f"{self.name} was rerun during a replay")


@pytest.mark.parametrize("how", ["results", "record", "imported"])
def test_replay_uses_the_recorded_tool_replies(results, tmp_path, how):
    record = load_results(results)[0]
    if how == "results":
        spec = f"replay:{results}?id=case-7"
    elif how == "record":
        (tmp_path / "one.json").write_text(json.dumps(record))
        spec = f"replay:{tmp_path / 'one.json'}"
    else:
        (tmp_path / "traj.json").write_text(json.dumps(record_to_trajectory(record).to_dict()))
        spec = f"replay:{tmp_path / 'traj.json'}"
    policy = make_policy(spec)
    tools = {n: MustNotRun(n) for n in ("search", "image_search", "query_knowledge")}
    # The recording announced its 4th round as the last: the replay does too, whatever our cap.
    traj = Agent(policy, tools, AgentConfig(max_rounds=11), work_dir=tmp_path / "w").run(record["prompt"])
    assert traj.messages == record["messages"]  # message for message, with no copy of the release
    assert traj.termination == "answer" and traj.meta["protocol"] == "official"
    assert traj.program.reference_images[0].path == record["reference_images"][0]["local_path"]


def test_replay_of_a_results_file_needs_an_id_when_it_holds_several(results):
    with pytest.raises(PolicyError, match=r"holds 2 records; pick one with \?id=<id> \(ids: case-7, 8\)"):
        make_policy(f"replay:{results}")
    with pytest.raises(PolicyError, match="no record with id 'nope'"):
        make_policy(f"replay:{results}?id=nope")


def test_render_accepts_an_official_record(results, tmp_path):
    runner = CliRunner()
    out = tmp_path / "door.png"
    res = runner.invoke(app, ["render", str(results), "--record", "case-7", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size[0] > 0
    info = json.loads(res.output)
    assert info["backend"] == "layout"
    single = tmp_path / "single.json"
    single.write_text(json.dumps(load_results(results)[0]))
    assert runner.invoke(app, ["render", str(single), "--out", str(tmp_path / "b.png")]).exit_code == 0
    # As the official generate_images.py: a record without an answer renders the user's own request,
    # with no references, and the output says so.
    res = runner.invoke(app, ["render", str(results), "--record", "8", "--out", str(tmp_path / "c.png"), "--json"])
    assert res.exit_code == 0, res.output
    assert "rendering the user's request as it is" in res.output and Image.open(tmp_path / "c.png").size[0] > 0
    Path(load_results(results)[0]["reference_images"][0]["local_path"]).unlink()
    res = runner.invoke(app, ["render", str(results), "--record", "case-7", "--out", str(tmp_path / "d.png")])
    assert res.exit_code == 0 and "not found, left out" in res.output and "has no reference file" in res.output


def test_official_render_inputs_follow_generate_images():
    from genevolve.official.records import record_program

    tmp = Path(__file__).parents[1] / "helpers" / "official_standin"  # any existing file serves as a reference here
    ref = {"img_id": "IMG_001", "note": "n", "local_path": str(tmp / "README.md")}
    base = {"prompt": "  A red car.  ", "gen_prompt": "The first reference image, painted red."}
    program, notes = record_program({**base, "reference_images": [ref]})
    assert (program.gen_prompt, [r.img_id for r in program.reference_images], notes) == (
        "The first reference image, painted red.", ["IMG_001"], [])
    for record in ({**base, "reference_images": []}, {**base, "gen_prompt": "", "reference_images": [ref]},
                   {"prompt": "A red car.", "gen_prompt": "", "reference_images": []}):
        program, notes = record_program(record)
        assert (program.gen_prompt, program.reference_images) == ("A red car.", [])
        assert "as the official generate_images.py does" in notes[-1]


def test_import_command_and_clear_errors(results, tmp_path, monkeypatch):
    monkeypatch.setenv("GENEVOLVE_STORE_PATH", str(tmp_path / "cli.db"))
    runner = CliRunner()
    res = runner.invoke(app, ["import", str(results)])
    assert res.exit_code == 0 and "imported 2 records (1 with a program)" in res.output
    assert len(Store(tmp_path / "cli.db").list_runs()) == 2
    (tmp_path / "bad.json").write_text('{"not": "results"}')
    res = runner.invoke(app, ["import", str(tmp_path / "bad.json")])
    assert res.exit_code == 2 and "expected a JSON array of result records" in res.output
    with pytest.raises(RecordError, match="has no 'prompt' or 'question'"):
        (tmp_path / "np.json").write_text('[{"gen_prompt": "x"}]')
        load_results(tmp_path / "np.json")


def test_a_record_our_trajectories_cannot_hold_is_refused_clearly(tmp_path):
    record = _record(tmp_path)
    assert record_to_trajectory(record).messages == record["messages"]  # the steps hold its conversation
    with pytest.raises(RecordError, match="'termination': unknown termination 'finished'; expected one of"):
        record_to_trajectory({**record, "termination": "finished"})
    with pytest.raises(RecordError, match="must open with a system message"):
        record_to_trajectory({**record, "messages": record["messages"][1:]})
    # A user message between a reply and the next turn opens that round; a third in a row has no place.
    crowded = record["messages"][:4] + [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(RecordError, match=r"message 5 \('user'\) has no place in round 2"):
        record_to_trajectory({**record, "messages": crowded + record["messages"][4:]})


def test_bench_export_feeds_the_official_evaluator_layout(tmp_path):
    from genevolve.bench.runner import BenchConfig, BenchRunner

    gt = tmp_path / "gt.png"
    Image.new("RGB", (32, 32), (0, 0, 0)).save(gt)
    bench = tmp_path / "bench.jsonl"
    rows = [{"id": "c1", "question": "A red kite over a green hill.", "gt_image": str(gt), "eval_type": "text",
             "category": "objects", "difficulty": "easy", "extra_field": 3},
            {"id": "c2", "question": "A cat on a sofa with the word \"NAP\".", "gt_image": str(gt),
             "eval_type": "text", "category": "text", "difficulty": "hard"}]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    from genevolve.bench.loaders import load_bench

    BenchRunner(load_bench(str(bench)), run, BenchConfig(bench=str(bench), offline=True, parallel=1),
                progress=False).run()
    ours_before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    res = CliRunner().invoke(app, ["bench", "export", str(run), "--format", "official"])
    assert res.exit_code == 0, res.output
    target = run / "official" / "results.json"
    data = json.loads(target.read_text())
    assert isinstance(data, list) and [r["id"] for r in data] == ["c1", "c2"]
    for r, row in zip(data, rows):
        # What their evaluator reads: the request, the image, the GT, the split fields.
        assert r["prompt"] == r["question"] == row["question"]
        assert r["success"] is True and r["image_status"] == "ok" and Path(r["output_path"]).is_file()
        assert r["gt_image"] == str(gt) and r["eval_type"] == "text" and r["category"] == row["category"]
        assert r["messages"][0]["role"] == "system" and r["termination"] == "answer" and r["gen_prompt"]
    assert data[0]["extra_field"] == 3
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == ours_before
    with pytest.raises(RecordError, match="own folder"):
        export_bench_run(run, run / "results.json")
    with pytest.raises(RecordError, match="not a bench run folder"):
        export_bench_run(tmp_path / "nowhere")


def test_our_trajectory_round_trips_through_the_official_record(results):
    record = load_results(results)[0]
    back = trajectory_to_record(record_to_trajectory(record))
    for key in ("prompt", "gen_prompt", "messages", "termination", "rounds"):
        assert back[key] == record[key], key
    assert [{k: r[k] for k in ("img_id", "note", "local_path", "url", "title")} for r in back["reference_images"]] == \
        [{k: r[k] for k in ("img_id", "note", "local_path", "url", "title")} for r in record["reference_images"]]


def test_summary_reports_the_official_overall_avg_beside_ours(tmp_path):
    """Their printed Overall Avg leaves not-applicable text cases out of text accuracy; ours counts 0.5."""
    run = tmp_path / "run"
    run.mkdir()
    levels = {"a": (1.0, False), "b": (0.5, False), "c": (0.5, True), "d": (0.5, True)}
    with open(run / "cases.jsonl", "w") as fh:
        for cid in levels:
            fh.write(json.dumps({"id": cid, "question": f"case {cid}", "eval_type": "text"}) + "\n")
    for stage in ("rollout", "render"):
        (run / f"{stage}.jsonl").write_text("".join(json.dumps({"id": c, "status": "ok"}) + "\n" for c in levels))
    with open(run / "judge.jsonl", "w") as fh:
        for cid, (text, na) in levels.items():
            overall = round(0.1 + 0.4 + 0.4 * text + 0.1, 6)
            fh.write(json.dumps({"id": cid, "score_status": "scored", "faithfulness": 1, "visual_correctness": 1,
                                 "text_accuracy": text, "aesthetics": 1, "overall": overall,
                                 "details": {"text_accuracy_na": na}}) + "\n")
    res = CliRunner().invoke(app, ["bench", "summary", str(run), "--no-html"])
    assert res.exit_code == 0, res.output
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["overall"], summary["text_accuracy"]) == (0.85, 0.625)  # ours
    theirs = summary["official_overall_avg"]
    assert (theirs["overall"], theirs["text_accuracy"], theirs["count"]) == (0.9, 0.75, 4)
    assert "official evaluator's Overall Avg: overall 0.9, text accuracy 0.75" in res.output
