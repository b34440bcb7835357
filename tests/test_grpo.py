"""GRPO: advantages and the clipped objective, the group tool cache, the hybrid reward on a real
trajectory, and a tiny model whose mean reward rises under a verifiable rule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_group_advantages_and_clipping():
    import torch

    from genevolve.training.grpo import clipped_objective, group_advantages

    adv = group_advantages([1.0, 0.0, 0.0, 1.0])
    assert [round(a, 3) for a in adv] == [1.0, -1.0, -1.0, 1.0]
    assert group_advantages([0.5, 0.5, 0.5]) == [0.0, 0.0, 0.0]
    assert group_advantages([2.0, 0.0], scale=False) == [1.0, -1.0]
    old = torch.zeros(3)
    # Positive advantage: the ratio's gain is capped at 1 + eps.
    new = torch.log(torch.tensor([1.5, 1.0, 0.5]))
    loss, frac = clipped_objective(new, old, 1.0, 0.2)
    assert math.isclose(float(loss), -(1.2 + 1.0 + 0.5) / 3, rel_tol=1e-5) and math.isclose(frac, 2 / 3, rel_tol=1e-6)
    # Negative advantage: the pessimistic side is kept (no reward for moving below 1 - eps).
    loss, _ = clipped_objective(new, old, -1.0, 0.2)
    assert math.isclose(float(loss), (1.5 + 1.0 + 0.8) / 3, rel_tol=1e-5)


def test_group_tool_cache_reuses_results_with_each_trajectorys_own_ids(tmp_path):
    from PIL import Image

    from genevolve.tools.base import Tool, ToolContext, ToolResult
    from genevolve.training.grpo import GroupToolCache
    from genevolve.trajectory import ImageRegistry

    for name, colour in (("a.png", (255, 0, 0)), ("b.png", (0, 0, 255))):
        Image.new("RGB", (8, 8), colour).save(tmp_path / name)

    class LibraryLookup(Tool):  # a real tool over real files: registers what it returns
        name = "image_search"
        calls = 0

        def __call__(self, args, ctx):
            LibraryLookup.calls += 1
            refs = [ctx.registry.register(tmp_path / n, source="library", title=n) for n in ("a.png", "b.png")]
            return ToolResult(text="\n".join(f"{r.img_id}: {r.title}" for r in refs), images=refs)

    cached = GroupToolCache(LibraryLookup())
    first = ToolContext(registry=ImageRegistry(), work_dir=tmp_path)
    r1 = cached({"query": "x"}, first)
    second = ToolContext(registry=ImageRegistry(), work_dir=tmp_path)
    second.registry.register(tmp_path / "b.png", source="user", title="mine")  # b.png is IMG_001 here
    r2 = cached({"query": "x"}, second)
    assert LibraryLookup.calls == 1 and cached.hits == 1
    assert r1.text == "IMG_001: a.png\nIMG_002: b.png"
    assert r2.text == "IMG_002: a.png\nIMG_001: b.png"  # renamed to the second trajectory's ids
    assert {i.img_id for i in r2.images} == {"IMG_001", "IMG_002"} == second.registry.ids()
    cached({"query": "y"}, second)
    assert LibraryLookup.calls == 2


def test_hybrid_reward_scores_a_real_planner_trajectory(tmp_path):
    from genevolve.agent import build_agent
    from genevolve.config import Settings
    from genevolve.training.rewards import HybridReward
    from genevolve.trajectory import Trajectory

    settings = Settings.load(None, policy="planner", offline=True, cache_mode="off")
    agent = build_agent(settings, offline=True)
    case = {"id": "t1", "question": 'A minimalist poster with the title "OPEN DAY" above a red bicycle',
            "category": "text_layout"}
    traj = agent.run(case["question"])
    assert traj.program is not None
    reward = HybridReward(renderer="layout", judge="local", sufficiency="sufficiency", w=0.5)
    r = reward(case, traj)
    assert set(r.components) == {"r_img", "r_text"}
    assert math.isclose(r.total, 0.5 * r.components["r_img"] + 0.5 * r.components["r_text"], abs_tol=1e-9)
    assert r.components["r_text"] in (0.0, 0.25, 0.5, 0.75, 1.0) and 0.0 <= r.components["r_img"] <= 1.0
    assert r.timings["render_s"] > 0 and r.timings["judge_s"] > 0
    empty = reward(case, Trajectory(request=case["question"], termination="format_error"))
    assert empty.total == 0.0


@pytest.mark.slow
def test_grpo_mean_reward_rises_under_a_verifiable_rule(tmp_path):
    """The answer must name the requested colour: a tiny random model learns it in ~25 steps."""
    from genevolve.training.common import config_from_file
    from genevolve.training.grpo import GRPOConfig, train_grpo
    from genevolve.training.metrics import read_metrics

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "r", "question": "draw a red cat", "keywords": ["red"]}\n'
                       '{"id": "b", "question": "draw a blue dog", "keywords": ["blue"]}\n')
    cfg = config_from_file(GRPOConfig, REPO / "configs" / "grpo_tiny_cpu.yaml",
                           prompts=str(prompts), run_dir=str(tmp_path / "run"), max_steps=25,
                           system_prompt_path=str(REPO / "configs" / "data" / "tiny_system.md"),
                           sdl={"enabled": False}, save_every=100)
    result = train_grpo(cfg, quiet=True)
    metrics = read_metrics(tmp_path / "run")
    assert result["state"] == "done" and len(metrics) == 25
    rewards = [m["reward_mean"] for m in metrics]
    early, late = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert late >= early + 0.2, rewards
    assert all(m["terminations"] for m in metrics) and metrics[0]["tokens"] > 0
    assert (tmp_path / "run" / "rollouts.jsonl").is_file()
