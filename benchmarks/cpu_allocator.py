"""The log-probability pass of a GRPO/SFT update on CPU, glibc's default malloc vs the training tunables.

    python benchmarks/cpu_allocator.py [--tokens 1024] [--repeats 2] [--threads 1]

Runs TRL's chunked log-prob kernel (the fused LM head its GRPO trainer uses: Gemma 3 270M's
262,144 x 640 bf16 head, 32,768-wide vocabulary tiles, forward and backward) on random hidden
states, twice per process after a warm-up, in a fresh process per arm: as Python starts, and
restarted with ``genevolve.training.allocator``'s ``GLIBC_TUNABLES``, alternating arms ``--repeats``
times so both see the same machine load. Prints each run's wall, user and system seconds and page
faults, and the ratio of median wall times (tuned / default).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
if sys.argv[3] == "tuned":
    from genevolve.training.allocator import restart_tuned_for_training
    restart_tuned_for_training()
import torch
from trl.kernels.chunked_logprob import ChunkedLogProbFunction
torch.manual_seed(0)
n = int(sys.argv[2])
head = (torch.randn(262144, 640) * 0.02).bfloat16()
hidden = torch.randn(n, 640, dtype=torch.bfloat16, requires_grad=True)
targets = torch.randint(0, 262144, (n,))
def once():
    out = ChunkedLogProbFunction.apply(hidden, head, None, targets, 1.0, 32768, None, 1.0, ())
    (out[0] if isinstance(out, (tuple, list)) else out).sum().backward()
once()
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
once(); once()
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"arm": sys.argv[3], "wall_s": time.perf_counter() - t0, "user_s": r1.ru_utime - r0.ru_utime,
                  "sys_s": r1.ru_stime - r0.ru_stime, "page_faults": r1.ru_minflt - r0.ru_minflt,
                  "load": os.getloadavg()[0]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1024, help="positions scored per pass")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="OMP threads per worker")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "GENEVOLVE_MALLOC")}
    env["OMP_NUM_THREADS"] = str(args.threads)
    rows = []
    for _ in range(args.repeats):
        for arm in ("default", "tuned"):
            out = subprocess.run([sys.executable, "-c", WORKER, str(REPO), str(args.tokens), arm], env=env,
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            rows.append(json.loads(out))
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
    med = {arm: statistics.median(r["wall_s"] for r in rows if r["arm"] == arm) for arm in ("default", "tuned")}
    print(f"\n{args.tokens} positions, forward+backward x2: default {med['default']:.1f} s -> tuned "
          f"{med['tuned']:.1f} s (median wall), ratio {med['tuned'] / med['default']:.2f}; load "
          f"{min(r['load'] for r in rows):.1f}-{max(r['load'] for r in rows):.1f}")


if __name__ == "__main__":
    main()
