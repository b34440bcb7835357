"""One GRPO+SDL step on Gemma 3 270M (LoRA, G=6) with the real offline tools, the layout
renderer, the local judge and the sufficiency judge: where the time goes.

    python benchmarks/train_grpo_step.py [--group 6] [--rounds 3] [--new-tokens 96] [--case ka_arch_02]

The buffer is seeded with a guide distilled (offline, contrastive) from the planner's
trajectory for the same request against a failed one, so the teacher path runs. The step is one
real step of the trainer (TRL's GRPOTrainer with our rollouts, rewards and SDL term); the 270M
base rarely writes a valid program, so its rewards are often all equal (zero advantages) and the
step then measures rollouts plus a no-op policy term. Rollouts, tools, rendering and judging are
always real.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--group", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--case", default="ka_arch_02")
    ap.add_argument("--planner-costs", action="store_true",
                    help="only time tools, rendering and judging on 3 planner trajectories of the case")
    args = ap.parse_args()
    if args.planner_costs:
        planner_costs(args.case)
        return

    from genevolve.agent import build_agent
    from genevolve.config import Settings
    from genevolve.training.data import load_prompts
    from genevolve.training.grpo import GRPOConfig, SDLConfig
    from genevolve.training.grpo_trainer import build_trainer
    from genevolve.training.metrics import read_metrics
    from genevolve.training.modeling import ModelConfig
    from genevolve.training.rewards import HybridReward
    from genevolve.training.sdl import ContrastiveDistiller
    from genevolve.trajectory import Step, Trajectory

    tmp = Path(tempfile.mkdtemp(prefix="grpo_bench_"))
    cases = [c for c in load_prompts(REPO / "examples" / "bench_mini" / "cases.jsonl") if c["id"] == args.case]
    (tmp / "prompts.jsonl").write_text(json.dumps(cases[0]) + "\n")
    cfg = GRPOConfig(
        model=ModelConfig(name="gemma3-270m", dtype="float32", max_length=3072, gradient_checkpointing=True,
                          lora={"r": 16, "alpha": 32}),
        prompts=str(tmp / "prompts.jsonl"), run_dir=str(tmp / "run"), max_steps=1, group_size=args.group,
        learning_rate=1e-5, max_new_tokens=args.new_tokens, tools="offline",
        sdl=SDLConfig(enabled=True, store_path=str(tmp / "guides.db")))
    cfg.agent.max_rounds, cfg.agent.max_tool_calls = args.rounds, args.rounds - 1
    t0 = time.perf_counter()
    trainer, _ = build_trainer(cfg)
    setup_s = time.perf_counter() - t0
    run = trainer.run

    # Seed the buffer: the planner's trajectory (best) against a failed attempt (worst).
    settings = Settings.load(None, policy="planner", offline=True)
    planner_traj = build_agent(settings, offline=True).run(cases[0]["question"])
    failed = Trajectory(request=cases[0]["question"], termination="format_error",
                        steps=[Step(round=1, kind="format_error", error="no <tool_call> or <answer> block after </think>")])
    reward = HybridReward()
    best_r, worst_r = reward(cases[0], planner_traj), reward(cases[0], failed)
    run.buffer.add(ContrastiveDistiller()(cases[0]["question"], planner_traj, failed, best_r, worst_r))
    run.buffer.refresh()
    _, cosine, passes = run.buffer.retrieve(cases[0]["question"], bump=False)

    t_step = time.perf_counter()
    trainer.train()
    step_s = time.perf_counter() - t_step
    record = read_metrics(cfg.run_dir)[-1]

    # The SDL term on trajectories that do have decision tokens (the planner's), timed alone.
    import torch

    from genevolve.training.data import ConversationEncoder
    from genevolve.training.sdl import sdl_loss, with_guide

    guide, _, _ = run.buffer.retrieve(cases[0]["question"], bump=False)
    rec = planner_traj.to_sft_record()
    encoder = ConversationEncoder(run.tokenizer, run.processor, max_length=cfg.model.max_length)
    student = encoder.encode(rec["messages"], rec["images"])
    teacher = encoder.encode(with_guide(rec["messages"], guide), rec["images"])
    trainer.model.train()
    t1 = time.perf_counter()
    terms = None
    for _ in range(args.group):
        terms = sdl_loss(trainer.model, student, teacher, fraction=0.1)
        terms.loss.backward()
    sdl_s = time.perf_counter() - t1

    out = {"case": args.case, "group": args.group, "max_rounds": args.rounds, "max_new_tokens": args.new_tokens,
           "threads": torch.get_num_threads(), "setup_s": round(setup_s, 2), "guide_cosine": round(cosine, 4),
           "guide_passes_gate": passes, "reward_mean": record["reward_mean"], "reward_std": record["reward_std"],
           "terminations": record["terminations"], "tool_calls": record["tool_calls"],
           "tool_cache_hits": record["tool_cache_hits"], "generated_tokens": record["tokens"],
           "sdl_samples": record.get("sdl_samples"), "step_s": round(step_s, 2), "timings": record["timings"],
           "sdl_on_planner_trajectories": {"samples": args.group, "tokens": len(student),
                                           "decision_tokens": terms.decision_tokens, "kept": terms.kept,
                                           "teacher_forward_plus_sdl_backward_s": round(sdl_s, 2)}}
    print(json.dumps(out, indent=2))


def planner_costs(case_id: str) -> None:
    """Tools, render and judge seconds per trajectory, on the planner (which does call tools)."""
    from genevolve.agent import build_agent
    from genevolve.config import Settings
    from genevolve.training.data import load_prompts
    from genevolve.training.rewards import HybridReward

    case = [c for c in load_prompts(REPO / "examples" / "bench_mini" / "cases.jsonl") if c["id"] == case_id][0]
    agent = build_agent(Settings.load(None, policy="planner", offline=True, cache_mode="off"), offline=True)
    reward = HybridReward()
    reward(case, agent.run(case["question"]))  # warm-up: indexes, OCR models
    rows = []
    for _ in range(3):
        traj = agent.run(case["question"])
        r = reward(case, traj)
        rows.append({"tool_calls": len(traj.tool_calls()), "tools_s": round(sum(s.tool_s for s in traj.steps), 3),
                     **{k: round(v, 3) for k, v in r.timings.items()}, "reward": round(r.total, 3)})
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
