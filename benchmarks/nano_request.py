"""Seconds per request for the ``nano`` policy (the real Gemma 3 270M with the shipped adapter).

Runs held-out requests end to end through the agent (offline tools, nano conversation, KV reuse,
per-turn token cap) and reports the wall time of each, its rounds and generated tokens, and the
median and worst. Target: under 60 s per request on an idle 2-core machine. The planner runs the
same requests in the same process as the baseline.

    python benchmarks/nano_request.py [--requests 5] [--eval runs/nano/data/eval.jsonl] [--adapter DIR]
    python benchmarks/nano_request.py --requests 3 --baseline HEAD~3   # before/after, same run

``--baseline REV`` runs the nano requests in two worker processes, this tree and the code of commit
REV (``git archive``), each with its model loaded and one warm-up request first, alternating request
by request so both see the same machine load; it prints each side's median and the ratio.

``--lookup N`` compares prompt-lookup decoding (``nano?lookup=N``) with plain decoding on one loaded
model in one process, alternating per request (the order flips each request), after a warm-up of
each; it prints both medians, the ratio, and in how many requests the turns were the same.

    python benchmarks/nano_request.py --requests 8 --eval EVAL.jsonl --lookup 8 [--adapter DIR]
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
    ap.add_argument("--baseline", metavar="REV", help="compare with the code of this git commit, interleaved")
    ap.add_argument("--lookup", type=int, default=0, help="compare nano?lookup=N with plain decoding, same process")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.adapter)
        return

    from genevolve.agent import build_agent
    from genevolve.config import Settings
    from genevolve.policies.local import LocalPolicy
    from genevolve.policies.planner import PlannerPolicy

    if args.eval:
        rows = [json.loads(x) for x in args.eval.read_text(encoding="utf-8").splitlines() if x.strip()]
        requests = [r["question"] for r in rows[: args.requests]]
    else:
        requests = DEFAULT_REQUESTS[: args.requests]
    if args.baseline:
        compare(args.baseline, requests, args.adapter)
        return
    if args.lookup:
        compare_lookup(args.lookup, requests, args.adapter)
        return
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


def worker(adapter: str | None) -> None:
    """Load nano, then run one request per stdin line; one JSON line per request on stdout."""
    import sys
    import tempfile

    from genevolve.agent import build_agent
    from genevolve.config import Settings
    from genevolve.policies.local import LocalPolicy

    t0 = time.perf_counter()
    policy = LocalPolicy.nano(adapter=adapter)
    settings = Settings(offline=True, cache_mode="off", runs_dir=tempfile.mkdtemp(prefix="nano-request-"),
                        extra={"library_embeddings": False})
    print(json.dumps({"load_s": round(time.perf_counter() - t0, 1)}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        policy.reset_cache()
        agent = build_agent(settings, policy=policy, offline=True)
        t = time.perf_counter()
        traj = agent.run(request)
        print(json.dumps({"seconds": round(time.perf_counter() - t, 2), "rounds": len(traj.steps),
                          "program": traj.program is not None,
                          "turns": [s.assistant_text or "" for s in traj.steps]}), flush=True)


def compare(rev: str, requests: list[str], adapter: str | None) -> None:
    import os
    import subprocess
    import sys
    import tarfile
    import tempfile

    repo = Path(__file__).resolve().parents[1]
    old = Path(tempfile.mkdtemp(prefix="nano-baseline-"))
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev], check=True, capture_output=True).stdout
    import io

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(old, filter="data")
    sides = {}
    for name, root in (("before", old), ("after", repo)):
        env = {**os.environ, "PYTHONPATH": str(root)}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker"] + (["--adapter", adapter] if adapter else [])
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        sides[name] = proc
    loads = {name: json.loads(_json_line(p)) for name, p in sides.items()}
    print(json.dumps({"baseline": rev, **{f"{k}_load_s": v["load_s"] for k, v in loads.items()}}), flush=True)
    rows: dict = {"before": [], "after": []}
    for i, req in enumerate([requests[0]] + requests):  # the first one warms each side up
        for name, proc in sides.items():
            proc.stdin.write(json.dumps(req) + "\n")
            proc.stdin.flush()
            row = json.loads(_json_line(proc))
            row["load"] = round(os.getloadavg()[0], 1)
            print(name, "warm-up" if i == 0 else i, json.dumps({k: v for k, v in row.items() if k != "turns"}),
                  flush=True)
            if i:
                rows[name].append(row)
    for proc in sides.values():
        proc.stdin.close()
        proc.wait()
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in rows.items()}
    same = sum(a["turns"] == b["turns"] for a, b in zip(rows["before"], rows["after"]))
    loads_seen = [r["load"] for v in rows.values() for r in v]
    print(f"\nnano median per request: before ({rev}) {med['before']:.1f} s, after {med['after']:.1f} s; "
          f"ratio after/before {med['after'] / med['before']:.2f} (speedup {med['before'] / med['after']:.2f}x); "
          f"same turns in {same} of {len(rows['after'])} requests; "
          f"load average {min(loads_seen):.1f}–{max(loads_seen):.1f}")


def compare_lookup(lookup: int, requests: list[str], adapter: str | None) -> None:
    """Plain decoding against ``lookup``-token prompt lookup on one loaded model, request by request."""
    import os
    import tempfile

    from genevolve.agent import build_agent
    from genevolve.config import Settings
    from genevolve.policies.local import LocalPolicy

    policy = LocalPolicy.nano(adapter=adapter)
    settings = Settings(offline=True, cache_mode="off", runs_dir=tempfile.mkdtemp(prefix="nano-lookup-"),
                        extra={"library_embeddings": False})

    def run(request: str, n: int) -> dict:
        policy.lookup = n
        policy.reset_cache()
        agent = build_agent(settings, policy=policy, offline=True)
        t = time.perf_counter()
        traj = agent.run(request)
        return {"seconds": round(time.perf_counter() - t, 2), "rounds": len(traj.steps),
                "tokens": sum(len(policy.tokenizer(s.assistant_text or "")["input_ids"]) for s in traj.steps),
                "turns": [s.assistant_text or "" for s in traj.steps], "load": round(os.getloadavg()[0], 1)}

    run(requests[0], 0), run(requests[0], lookup)  # warm-up of both paths
    rows: dict = {0: [], lookup: []}
    for i, req in enumerate(requests):
        for n in ((0, lookup) if i % 2 == 0 else (lookup, 0)):
            rows[n].append(run(req, n))
            print(f"lookup={n}", i + 1, json.dumps({k: v for k, v in rows[n][-1].items() if k != "turns"}), flush=True)
    med = {n: statistics.median(r["seconds"] for r in v) for n, v in rows.items()}
    # bf16 logits tie often (two tokens at 19.5 exactly), and a draft's batched forward rounds
    # differently from a one-token step: the turns can part, so time per token is the fair ratio.
    per_token = {n: 1000 * sum(r["seconds"] for r in v) / max(sum(r["tokens"] for r in v), 1) for n, v in rows.items()}
    same = sum(a["turns"] == b["turns"] for a, b in zip(rows[0], rows[lookup]))
    loads = [r["load"] for v in rows.values() for r in v]
    print(f"\nnano median per request: plain {med[0]:.1f} s, lookup={lookup} {med[lookup]:.1f} s; ratio "
          f"{med[lookup] / med[0]:.2f}; ms per generated token: plain {per_token[0]:.0f}, lookup={lookup} "
          f"{per_token[lookup]:.0f} (ratio {per_token[lookup] / per_token[0]:.2f}); same turns in {same} of "
          f"{len(requests)} requests; load average {min(loads):.1f}–{max(loads):.1f}")


def _json_line(proc) -> str:
    """The worker's next JSON line (other output, e.g. library warnings, is skipped)."""
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the worker process ended early")
        if line.startswith("{"):
            return line


if __name__ == "__main__":
    main()
