"""One GRPO step on the real Gemma 3 270M (nano adapter, LoRA): the old path against today's trainer.

    python benchmarks/grpo_step.py [--steps 1] [--case ka_arch_02] [--group 6] [--new-tokens 320]

Each arm runs in its own process (the allocator is set when a process starts), one after the other,
on the same prompt, config (``configs/nano/grpo.yaml``: the nano conversation, 6 rounds, 5 tool
calls, the offline tools behind the group's cache, the hybrid reward, temperature 1.0) and seed:

- before: the path GRPO took at first, kept here only: G calls of ``Agent.run`` one after another
  on a ``LocalPolicy`` (KV reuse within a trajectory), each trajectory re-rendered to text and
  re-tokenised (``ConversationEncoder``), the rewards, then one forward and backward pass of a
  policy-gradient loss over the G rows; the process's default allocator, the base unpacked;
- trainer: ``genevolve train grpo``'s own step (``run_grpo`` for ``--steps`` steps): the G rollouts
  in lock step with the frozen base packed, the sampled ids kept, TRL's update with the LM head run
  only at the policy's tokens in 512-token tiles and each row without the group's padding, under
  the training allocator settings
  (``genevolve/training/allocator.py``);
  its seconds are TRL's ``step_time`` (rollouts, rewards, old log-probs, forward and backward);
- after (``--only after``): the lock-step rollouts with the "before" arm's update, in one process.

Prints one JSON object; the ratio is trainer / before wall time per step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1, help="steps per arm (each a fresh seed: 0, 1, ...)")
    ap.add_argument("--case", default="ka_arch_02", help="a case of examples/bench_mini")
    ap.add_argument("--group", type=int, default=6)
    ap.add_argument("--new-tokens", type=int, default=320)
    ap.add_argument("--only", choices=("before", "after", "trainer"), default=None,
                    help="run one arm in this process (without it: before and trainer, a process each)")
    args = ap.parse_args()
    if args.only is None:
        return _both_arms(args)
    if args.only == "trainer":
        return print(json.dumps(_trainer_arm(args), indent=2))

    import torch

    from genevolve.training.config import config_from_file
    from genevolve.training.data import load_prompts
    from genevolve.training.grpo import GRPOConfig
    from genevolve.training.grpo_trainer import _Run
    from genevolve.training.metrics import RunFiles

    tmp = Path(tempfile.mkdtemp(prefix="grpo_step_"))
    case = _case(args.case, load_prompts)
    cfg = _config(args, tmp, GRPOConfig, config_from_file, load_prompts)
    t0 = time.perf_counter()
    run = _Run(cfg, RunFiles(cfg.run_dir, create=True))
    if args.only == "before":
        run.packed.remove()  # the old path decoded on the plain base
    load_s = time.perf_counter() - t0
    arms = {"before": lambda: _before(run, case), "after": lambda: _after(run, case)}
    out = {"case": args.case, "group": args.group, "max_new_tokens": args.new_tokens, "steps": args.steps,
           "dtype": str(next(run.model.parameters()).dtype), "torch_threads": torch.get_num_threads(),
           "adapter": cfg.model.init_adapter is not None, "load_s": round(load_s, 1),
           "load_avg_start": os.getloadavg()}
    for name in ([args.only] if args.only else ["before", "after"]):
        steps = []
        for seed in range(args.steps):
            torch.manual_seed(seed)
            steps.append(_step(run, case, arms[name]))
            print(json.dumps({name: steps[-1]}), file=sys.stderr, flush=True)
        out[name] = {"step_s": [s["step_s"] for s in steps], "mean_step_s": sum(s["step_s"] for s in steps) / len(steps),
                     "steps": steps}
    if "before" in out and "after" in out:
        out["ratio_after_over_before"] = out["after"]["mean_step_s"] / out["before"]["mean_step_s"]
    out["load_avg_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


def _case(case_id: str, load_prompts) -> dict:
    return [c for c in load_prompts(REPO / "examples" / "bench_mini" / "cases.jsonl") if c["id"] == case_id][0]


def _config(args, tmp: Path, GRPOConfig, config_from_file, load_prompts):
    """configs/nano/grpo.yaml on the one prompt, with the shipped adapter as the starting point."""
    (tmp / "prompts.jsonl").write_text(json.dumps(_case(args.case, load_prompts)) + "\n")
    cfg = config_from_file(GRPOConfig, REPO / "configs" / "nano" / "grpo.yaml", prompts=str(tmp / "prompts.jsonl"),
                           run_dir=str(tmp / "run"), group_size=args.group, max_new_tokens=args.new_tokens,
                           max_steps=args.steps, save_steps=10_000)
    adapter = REPO / "assets" / "adapters" / "nano"
    if (adapter / "adapter_config.json").is_file():
        cfg.model.init_adapter = str(adapter)
    return cfg


def _both_arms(args) -> None:
    """The old path under the process's default allocator, then today's trainer under the training
    allocator settings: a fresh process each, the same prompt and seed."""
    import subprocess

    from genevolve.training.allocator import training_environment

    plain = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    arms = {"before": plain, "trainer": training_environment(plain) or plain}
    base = [sys.executable, __file__, "--steps", str(args.steps), "--case", args.case, "--group", str(args.group),
            "--new-tokens", str(args.new_tokens)]
    out = {"case": args.case, "group": args.group, "max_new_tokens": args.new_tokens, "steps": args.steps,
           "load_avg_start": os.getloadavg()}
    for name, env in arms.items():
        done = subprocess.run([*base, "--only", name], env=env, stdout=subprocess.PIPE, check=True, text=True)
        out[name] = json.loads(done.stdout)
        out[name]["glibc_tunables"] = env.get("GLIBC_TUNABLES")
        print(json.dumps({name: out[name].get(name, out[name])}), file=sys.stderr, flush=True)
    before = out["before"]["before"]["mean_step_s"]
    out["ratio_trainer_over_before"] = out["trainer"]["mean_step_s"] / before
    out["load_avg_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


def _trainer_arm(args) -> dict:
    """``run_grpo`` for ``args.steps`` steps; each step's seconds and counts from its metrics."""
    import torch

    from genevolve.training.config import config_from_file
    from genevolve.training.data import load_prompts
    from genevolve.training.grpo import GRPOConfig
    from genevolve.training.grpo_trainer import run_grpo
    from genevolve.training.metrics import read_metrics

    tmp = Path(tempfile.mkdtemp(prefix="grpo_step_"))
    cfg = _config(args, tmp, GRPOConfig, config_from_file, load_prompts)
    t0 = time.perf_counter()
    run_grpo(cfg, quiet=True)
    wall_s = time.perf_counter() - t0
    steps = [m for m in read_metrics(Path(cfg.run_dir)) if m.get("reward_mean") is not None]
    rows = [{"step_s": round(m["step_time"], 2), "tokens": m.get("tokens"),
             "terminations": m.get("terminations"), "tool_calls": m.get("tool_calls"),
             **{k: round(v, 2) for k, v in (m.get("timings") or {}).items() if isinstance(v, (int, float))}}
            for m in steps]
    return {"torch_threads": torch.get_num_threads(), "wall_s_with_load_and_save": round(wall_s, 1),
            "step_s": [r["step_s"] for r in rows], "mean_step_s": sum(r["step_s"] for r in rows) / max(len(rows), 1),
            "steps": rows}


def _step(run, case: dict, rollouts) -> dict:
    """One step: rollouts, rewards, the loss's forward and backward over the rows."""
    import torch

    t0 = time.perf_counter()
    run.model.eval()
    with torch.no_grad():
        trajs, rows, timings = rollouts()
    t1 = time.perf_counter()
    rewards = [run.reward_fn(case, t).total for t in trajs]
    t2 = time.perf_counter()
    mean = sum(rewards) / len(rewards)
    std = (sum((r - mean) ** 2 for r in rewards) / len(rewards)) ** 0.5
    run.model.train()
    from genevolve.training.modeling import selected_logprobs

    device = next(run.model.parameters()).device
    for (ids, mask), r in zip(rows, rewards):
        batch = {"input_ids": torch.tensor([ids], device=device),
                 "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=device)}
        target = torch.tensor([mask], dtype=torch.bool, device=device)
        if not bool(target.any()):
            continue
        logp, _ = selected_logprobs(run.model, batch, target)
        adv = (r - mean) / (std + 1e-4)
        (-(adv * logp).mean() / len(rows)).backward()
    run.model.zero_grad(set_to_none=True)
    t3 = time.perf_counter()
    return {"step_s": round(t3 - t0, 2), "rollouts_s": round(t1 - t0, 2), "reward_s": round(t2 - t1, 2),
            "update_s": round(t3 - t2, 2), "policy_tokens": sum(sum(m) for _, m in rows),
            "row_tokens": sum(len(i) for i, _ in rows), "turns": sum(len(t.steps) for t in trajs),
            "terminations": dict(Counter(str(t.termination) for t in trajs)),
            "tool_calls": sum(len(t.tool_calls()) for t in trajs), "rewards": [round(r, 3) for r in rewards],
            **{k: round(v, 2) for k, v in timings.items()}}


def _before(run, case: dict):
    """The old path: G × Agent.run one after another, then re-tokenised from the messages."""
    from genevolve.agent import Agent, AgentConfig
    from genevolve.training.data import ConversationEncoder
    from genevolve.training.grpo import GroupToolCache

    policy = run.policy
    policy.explicit_sampling = {"temperature", "top_p", "max_new_tokens"}  # as the old trainer set it
    agent = Agent(policy, run.tools, AgentConfig(**{**vars(run.cfg.agent), "offline": True, "tidy_kept_prompt": False}),
                  work_dir=run.files.dir / "before_files")
    encoder = ConversationEncoder(run.tokenizer, run.processor, max_length=run.cfg.model.max_length)
    for t in run.tools.values():
        if isinstance(t, GroupToolCache):
            t.clear()
    policy.reset_cache()
    t0 = time.perf_counter()
    trajs = [agent.run(case["question"], case.get("images", [])) for _ in range(run.cfg.group_size)]
    policy.reset_cache()
    gen_s = time.perf_counter() - t0
    rows = []
    for traj in trajs:
        rec = traj.to_sft_record()
        enc = encoder.encode(rec["messages"], rec["images"])
        rows.append((list(enc.input_ids), [int(m) for m in enc.loss_mask]))
    return trajs, rows, {"agent_runs_s": gen_s}


def _after(run, case: dict):
    """The trainer's path: the group in lock step, rows from the sampled token histories."""
    timings: Counter = Counter()
    first = len(run.decoder.batches)
    rollouts = run.group_rollouts(case, timings)
    batches = run.decoder.batches[first:]  # rows in each decode step: how full the batch stayed
    timings["decode_steps"] = len(batches)
    timings["mean_batch"] = sum(batches) / max(len(batches), 1)
    rows = []
    for traj, history in rollouts:
        row = run.row(history, traj)
        rows.append((row.prompt_ids + row.completion_ids, [0] * len(row.prompt_ids) + row.env_mask))
    return [t for t, _ in rollouts], rows, {k: timings[k] for k in ("generation_s", "tools_s", "decode_steps",
                                                                     "mean_batch")}


if __name__ == "__main__":
    main()
