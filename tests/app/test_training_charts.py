"""The training view's charts: which metric columns each one draws."""

from __future__ import annotations

from genevolve.policies.planner.routing import SKILL_PRIORITY as SKILLS


def _grpo_row(step: int) -> dict:
    # The shape metrics.jsonl has for a GRPO step (training/grpo_trainer.py's record).
    return {"step": step, "loss": 0.01, "rewards/genevolve_reward/mean": 0.8, "kl": 0.04, "tool_calls": 3.0,
            "tool_counts": {"search": 2, "image_search": 3, "query_knowledge": 6},
            "skill_counts": {s: 1 for s in SKILLS},
            "pictures": {"user_given": 6, "user_bound": 5, "library_bound": 1},
            "terminations": {"answer": 6}, "timings": {"generation_s": 30.0}}


def test_pictures_bound_are_charted_beside_the_tool_calls_and_every_skill_has_its_line():
    from app.training_tab import CHARTS, MAX_SERIES, _flatten, chart_series, watch

    rows = [_flatten(_grpo_row(s)) for s in (1, 2)]
    series = chart_series(rows)
    assert {"pictures.user_given", "pictures.user_bound", "pictures.library_bound"} <= set(series["tools"])
    assert series["skills"] == sorted(f"skill_counts.{s}" for s in SKILLS)
    assert all(len(keys) <= MAX_SERIES for keys in series.values())  # nothing cut off the chart
    assert not any(k.startswith("timings.") for keys in series.values() for k in keys)
    # The view's outputs: status, one figure per chart, the log.
    assert len(watch(None)) == len(CHARTS) + 2
