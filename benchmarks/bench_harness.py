"""Benchmark harness speed.

1. The mini bench offline end to end (planner + layout + local judge) at parallel 2: cases/minute.
2. The judge stage alone against a local chat-completions endpoint with 500 ms latency
   (tests/helpers/chat_server.py, a real HTTP server): parallel 8 vs parallel 1 throughput.

    python benchmarks/bench_harness.py [--cases N] [--skip-mini]

Prints a JSON report. GENEVOLVE_HOME defaults to a fresh temp folder (cold tool cache).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def mini_end_to_end(work: Path, parallel: int) -> dict:
    from genevolve.bench.loaders import load_bench
    from genevolve.bench.runner import BenchConfig, BenchRunner
    from genevolve.bench.summary import write_summary

    cases = load_bench("mini")
    out = work / f"mini_p{parallel}"
    # A fresh home per run: each starts with a cold tool cache, so runs compare fairly.
    os.environ["GENEVOLVE_HOME"] = tempfile.mkdtemp(prefix=f"genevolve_home_p{parallel}_")
    t0 = time.perf_counter()
    BenchRunner(cases, out, BenchConfig(parallel=parallel, offline=True), progress=False).run()
    wall = time.perf_counter() - t0
    s = write_summary(out)
    return {"cases": len(cases), "parallel": parallel, "wall_s": round(wall, 2),
            "cases_per_min": round(len(cases) / wall * 60, 2), "scored": s["scored"], "overall": s["overall"]}


_SERVER = """
import json, sys
sys.path.insert(0, {tests!r})
from helpers.chat_server import ChatServer
reply = json.dumps({{"constraints": [], "rationale": "ok", "faithfulness": 1, "visual_correctness": 0.5,
                    "text_accuracy": 1, "text_accuracy_na": False, "aesthetics": 0.5}})
server = ChatServer(lambda body: reply, latency={latency}).start()
print(server.base_url, flush=True)
sys.stdin.read()  # serve until the parent closes our stdin
"""


class EndpointProcess:
    """The scripted endpoint in its own process, as a remote judge would be (its request parsing
    must not share our interpreter lock)."""

    def __init__(self, latency: float):
        import subprocess

        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER.format(tests=str(ROOT / "tests"), latency=latency)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.base_url = self.proc.stdout.readline().strip()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def judge_stage(work: Path, n_cases: int, latency: float, parallels=(1, 8)) -> dict:
    from genevolve.bench.loaders import load_bench
    from genevolve.bench.runner import BenchConfig, BenchRunner, read_jsonl

    cases = load_bench("mini")[:n_cases]
    results = {}
    server = EndpointProcess(latency)
    try:
        spec = f"kscore:bench-vlm@{server.base_url}"
        base = work / "judge_base"
        prep = BenchRunner(cases, base, BenchConfig(judge=spec, parallel=2, offline=True), progress=False)
        prep._prepare()
        prep._run_stage("rollout", prep.do_rollout)
        prep._run_stage("render", prep.do_render)
        for p in parallels:
            d = work / f"judge_p{p}"
            shutil.copytree(base, d)
            runner = BenchRunner(cases, d, BenchConfig(judge=spec, parallel=p, offline=True), resume=True,
                                 progress=False)
            runner._prepare()
            runner.judge()  # build the client (imports openai) before the clock starts
            t0 = time.perf_counter()
            runner._run_stage("judge", runner.do_judge)
            wall = time.perf_counter() - t0
            rows = read_jsonl(d / "judge.jsonl")
            assert len(rows) == len(cases) and all(r["status"] == "ok" for r in rows), rows[:1]
            results[p] = {"wall_s": round(wall, 3), "cases_per_s": round(len(cases) / wall, 3)}
    finally:
        server.close()
    lo, hi = min(parallels), max(parallels)
    return {"cases": len(cases), "latency_s": latency, "by_parallel": results,
            "speedup": round(results[hi]["cases_per_s"] / results[lo]["cases_per_s"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=32, help="cases for the judge-stage measurement")
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--skip-mini", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("GENEVOLVE_OFFLINE", "1")
    os.environ.setdefault("GENEVOLVE_HOME", tempfile.mkdtemp(prefix="genevolve_bench_home_"))
    work = Path(tempfile.mkdtemp(prefix="genevolve_bench_"))
    report = {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}
    try:
        report["judge_stage"] = judge_stage(work, args.cases, args.latency)
        if not args.skip_mini:
            runs = {p: mini_end_to_end(work, parallel=p) for p in (2, 1)}
            report["mini_end_to_end"] = {"parallel_2": runs[2], "parallel_1_baseline": runs[1],
                                         "speedup": round(runs[2]["cases_per_min"] / runs[1]["cases_per_min"], 2)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
