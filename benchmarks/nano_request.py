"""Seconds per request for the ``nano`` policy (the real Gemma 3 270M with the shipped adapter).

Runs held-out requests end to end through the agent (offline tools, nano conversation, KV reuse,
per-turn token cap) and reports the wall time of each, its rounds and generated tokens, and the
median and worst. Target: under 60 s per request on an idle 2-core machine. The planner runs the
same requests in the same process as the baseline.

    python benchmarks/nano_request.py [--requests 5] [--eval runs/nano/data/eval.jsonl] [--adapter DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

DEFAULT_REQUESTS = [
    'A café window sign that says "SLOW MORNINGS" in glowing tube letters, with "EST. 2004" in smaller letters underneath.',
    "A London double-decker Routemaster bus crossing a bridge in the rain, as a loose watercolour.",
    "Three glass jars in a row on a kitchen shelf, morning light.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--eval", type=Path, help="take the first N questions of this bench JSONL instead")
    ap.add_argument("--adapter", help="a LoRA adapter folder (default: the shipped assets/adapters/nano)")
    args = ap.parse_args()

    from genevolve.agent import build_agent
    from genevolve.config import Settings
    from genevolve.policies.local import LocalPolicy
    from genevolve.policies.planner import PlannerPolicy

    if args.eval:
        rows = [json.loads(x) for x in args.eval.read_text(encoding="utf-8").splitlines() if x.strip()]
        requests = [r["question"] for r in rows[: args.requests]]
    else:
        requests = DEFAULT_REQUESTS[: args.requests]
    t0 = time.perf_counter()
    policy = LocalPolicy.nano(adapter=args.adapter)
    load_s = time.perf_counter() - t0
    settings = Settings.load(cache_mode="off")
    results = {}
    for name, pol in (("planner", PlannerPolicy()), ("nano", policy)):
        agent = build_agent(settings, policy=pol, offline=True)
        rows = []
        for req in requests:
            t = time.perf_counter()
            traj = agent.run(req)
            rows.append({"seconds": round(time.perf_counter() - t, 2), "rounds": len(traj.steps),
                         "termination": traj.termination, "program": traj.program is not None,
                         "chars": sum(len(s.assistant_text or "") for s in traj.steps)})
            print(name, json.dumps(rows[-1]), flush=True)
        secs = [r["seconds"] for r in rows]
        results[name] = {"median_s": statistics.median(secs), "max_s": max(secs),
                         "programs": sum(r["program"] for r in rows), "requests": len(rows)}
    print(json.dumps({"model_load_s": round(load_s, 1), **results}, indent=2))
    ratio = results["nano"]["median_s"] / max(results["planner"]["median_s"], 1e-9)
    print(f"\nnano median {results['nano']['median_s']} s (max {results['nano']['max_s']} s) per request; "
          f"{ratio:.0f}x the planner's {results['planner']['median_s']} s; target < 60 s")


if __name__ == "__main__":
    main()
