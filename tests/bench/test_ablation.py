"""The nano ablation harness: real agent runs (planner), real renders and OCR, resumable JSONL."""

from __future__ import annotations

import json

from genevolve.bench.ablation import (AblationRunner, System, bootstrap_ci, chart, jaccard, markdown_table,
                                      quoted_texts, stratified_subset, summarise)
from genevolve.policies.planner import PlannerPolicy

CASES = [
    {"id": "a", "question": 'A café window sign that says "SLOW MORNINGS" in glowing tube letters.',
     "category": "text_layout", "teacher": {"skills": ["text_rendering"]}},
    {"id": "b", "question": "Three glass jars in a row on a kitchen shelf, morning light.", "category": "counting",
     "teacher": {"skills": ["quantity_counting", "spatial_layout"]}},
]


class _Mute:
    """A policy that never answers: every turn is prose, so the run ends on format errors."""

    name = "mute"

    def stream(self, messages, images=()):
        yield "I would rather describe a sunset."


def test_runner_measures_each_request_and_resumes(tmp_path):
    calls = []
    runner = AblationRunner(CASES, tmp_path)
    rows = runner.run(System("planner", lambda: calls.append(1) or PlannerPolicy()))
    assert [r["id"] for r in rows] == ["a", "b"] and calls == [1]
    a, b = rows
    assert a["valid"] and a["quotes_kept"] == 1.0 and a["ocr_text"] == 1.0 and a["reward"] > 0.3
    assert b["quotes_kept"] is None and b["ocr_text"] is None  # nothing quoted: not a zero, not measured
    assert 0.0 <= b["skill_agreement"] <= 1.0 and a["rounds"] >= 2 and a["tokens"] > 0
    # Everything done: the policy is not even built again.
    assert runner.run(System("planner", lambda: calls.append(1) or PlannerPolicy())) == rows and calls == [1]
    # A torn last line (a kill mid-write) is dropped and that request runs again.
    path = tmp_path / "planner.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][:20])
    assert [r["id"] for r in runner.run(System("planner", PlannerPolicy))] == ["a", "b"]
    assert a["user_pictures_bound"] is None and b["user_pictures_bound"] is None  # no picture given
    # Rescoring measures the stored trajectories again without new rollouts.
    before = runner.rows("planner")
    after = runner.rescore("planner")
    assert [(r["id"], r["valid"], r["quotes_kept"], r["tokens"]) for r in after] == \
        [(r["id"], r["valid"], r["quotes_kept"], r["tokens"]) for r in before]


def test_a_policy_that_never_answers_scores_zero_not_null(tmp_path):
    rows = AblationRunner(CASES[:1], tmp_path).run(System("mute", _Mute))
    assert rows[0]["valid"] is False and rows[0]["reward"] == 0.0 and rows[0]["quotes_kept"] == 0.0
    assert rows[0]["ocr_text"] is None


def test_summary_table_interval_and_chart(tmp_path):
    rows = {"x": [{"id": str(i), "valid": i % 2 == 0, "quotes_kept": None, "ocr_text": None, "skill_agreement": 1.0,
                   "reward": float(i % 2), "rounds": 3, "tokens": 100, "seconds": 2.0} for i in range(20)]}
    (s,) = summarise(rows)
    assert s["valid"] == 0.5 and s["quotes_kept"] is None and s["quotes_kept_n"] == 0
    lo, hi = s["reward_ci95"]
    assert 0.2 < lo < 0.5 < hi < 0.8
    assert "| x | 20 | 50% |" in markdown_table([s])
    assert bootstrap_ci([]) is None and bootstrap_ci([1.0, 1.0]) == (1.0, 1.0)
    from PIL import Image

    with Image.open(chart([s], tmp_path / "c.png")) as im:
        assert im.format == "PNG" and im.width > 600


def test_helpers():
    assert quoted_texts('A sign that says "OPEN" and "CLOSED"') == ["OPEN", "CLOSED"]
    assert jaccard([], []) == 1.0 and jaccard(["a"], ["a", "b"]) == 0.5
    cases = [{"id": f"{c}{i}", "category": c} for c in "xyz" for i in range(10)]
    sub = stratified_subset(cases, 6)
    assert len(sub) == 6 and {c["category"] for c in sub} == {"x", "y", "z"}
    assert stratified_subset(cases, 6) == sub and json.dumps(sub)


def test_paired_difference_uses_only_shared_requests_and_resamples_them_together():
    from genevolve.bench.ablation import paired, paired_table

    base = [{"id": str(i), "reward": 0.5} for i in range(30)]
    better = [{"id": str(i), "reward": 0.5 + (0.2 if i % 3 else 0.0)} for i in range(20)]  # a subset of base's
    c = paired({"new": better, "old": base}, "new", "old")
    assert c["requests"] == 20 and c["baseline_reward"] == 0.5
    assert c["wins"] == 13 and c["ties"] == 7 and c["losses"] == 0
    lo, hi = c["delta_ci95"]
    assert 0.0 < lo < c["delta"] < hi <= 0.2  # every request moved up or stayed: the interval is above zero
    # Noise around no change: the interval straddles zero.
    noisy = [{"id": str(i), "reward": 0.5 + (0.1 if i % 2 else -0.1)} for i in range(20)]
    lo, hi = paired({"new": noisy, "old": base}, "new", "old")["delta_ci95"]
    assert lo < 0 < hi
    assert paired({"new": better, "old": []}, "new", "old") is None  # nothing shared: no claim
    assert "| new | old | 20 |" in paired_table([c])


def test_a_sampled_system_runs_a_stratified_sample_that_the_full_run_contains(tmp_path):
    cases = [{"id": f"{c}{i}", "question": "q", "category": c} for c in "xyz" for i in range(10)]
    runner = AblationRunner(stratified_subset(cases, 12), tmp_path)
    sample = runner.cases_of(System("s", PlannerPolicy, sample=6))
    assert len(sample) == 6 and {c["category"] for c in sample} == {"x", "y", "z"}
    assert {c["id"] for c in sample} <= {c["id"] for c in runner.cases}


def test_adapter_source_is_relative_to_the_run_and_hashes_the_weights(tmp_path):
    import hashlib

    from genevolve.nano.recipe import adapter_source

    ckpt = tmp_path / "run" / "grpo" / "checkpoints" / "checkpoint-6"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"weights")
    source = adapter_source("grpo", ckpt, tmp_path / "run")
    assert source["checkpoint_in_run"] == "grpo/checkpoints/checkpoint-6"
    assert source["adapter_model_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert str(tmp_path) not in str(source)


def test_skills_used_lists_only_skills_a_call_named():
    """One function for every reader (bench rows, ablation agreement, eval skill recall, the data
    build's teacher record): a query_knowledge call that named no skill consulted none."""
    from genevolve.trajectory import Step, Trajectory

    def call(args, tool="query_knowledge"):
        return Step(round=1, kind="tool_call", tool_name=tool, tool_arguments=args)

    traj = Trajectory(request="r", steps=[call({"skill_name": "text_rendering"}), call({}), call(None),
                                          call({"skill_name": ""}), call({"query": "x"}, tool="search"),
                                          call({"skill_name": "spatial_layout"})])
    assert traj.skills_used() == ["text_rendering", "spatial_layout"]
    assert jaccard(traj.skills_used(), ["text_rendering", "spatial_layout"]) == 1.0


def test_a_request_that_gives_a_picture_is_measured_on_binding_it(tmp_path):
    """The held-out split's picture requests ("the rocket from the first image"): the teacher binds
    the picture, and the table shows the share with how many requests gave one."""
    from pathlib import Path

    picture = Path(__file__).resolve().parents[2] / "assets" / "library" / "red_motorcycle.jpg"
    case = {"id": "p", "question": "The motorcycle from the first image parked beside a desk lamp.",
            "images": [str(picture)], "category": "spatial_relation", "teacher": {"skills": ["spatial_layout"]}}
    runner = AblationRunner([case, CASES[1]], tmp_path)
    rows = runner.run(System("planner", PlannerPolicy))
    assert [r["user_pictures_bound"] for r in rows] == [1.0, None]
    (summary,) = summarise({"planner": rows})
    assert summary["user_pictures_bound"] == 1.0 and summary["user_pictures_bound_n"] == 1
    assert "| user pictures bound |" in markdown_table([summary]) and "| 100% (n=1) |" in markdown_table([summary])
