"""The log-probability pass of a GRPO update on CPU: TRL's defaults vs what `genevolve train` sets.

    python benchmarks/cpu_allocator.py [--tokens 2048] [--repeats 1] [--threads 1]

Runs TRL's chunked log-prob kernel (the fused LM head its GRPO trainer uses: Gemma 3 270M's
262,144 x 640 bf16 head, 32,768-wide vocabulary tiles, forward and backward) on random hidden
states, once after a warm-up, in a fresh process per arm:

- default: glibc's malloc as Python starts, TRL's 4,096-token tiles;
- tunables: restarted with ``genevolve.training.allocator``'s ``GLIBC_TUNABLES``, 4,096-token tiles;
- training: the tunables and ``grpo_trainer.CPU_LOGPROB_TILE_TOKENS`` (what GRPO on CPU runs).

The arms alternate ``--repeats`` times so they see the same machine load. Prints each run's wall,
user and system seconds, page faults and peak resident memory, and each arm's median wall time as
a ratio to the default's.
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
ARMS = ("default", "tunables", "training")

WORKER = """
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
if sys.argv[3] != "default":
    from genevolve.training.allocator import restart_tuned_for_training
    restart_tuned_for_training()
import torch
import trl.kernels.chunked_logprob as chunked
if sys.argv[3] == "training":
    from genevolve.training.grpo_trainer import _cpu_logprob_path
    _cpu_logprob_path()
ChunkedLogProbFunction = chunked.ChunkedLogProbFunction
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
once()
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"arm": sys.argv[3], "tile": chunked.TOKEN_CHUNK_SIZE, "wall_s": time.perf_counter() - t0,
                  "user_s": r1.ru_utime - r0.ru_utime, "sys_s": r1.ru_stime - r0.ru_stime,
                  "page_faults": r1.ru_minflt - r0.ru_minflt, "peak_gb": r1.ru_maxrss / 1e6,
                  "load": os.getloadavg()[0]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048, help="positions scored per pass")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="OMP threads per worker")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "GENEVOLVE_MALLOC")}
    env["OMP_NUM_THREADS"] = str(args.threads)
    rows = []
    for _ in range(args.repeats):
        for arm in ARMS:
            out = subprocess.run([sys.executable, "-c", WORKER, str(REPO), str(args.tokens), arm], env=env,
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            rows.append(json.loads(out))
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in rows[-1].items()}), flush=True)
    med = {arm: statistics.median(r["wall_s"] for r in rows if r["arm"] == arm) for arm in ARMS}
    print(f"\n{args.tokens} positions, forward + backward, median wall: "
          + ", ".join(f"{arm} {med[arm]:.1f} s ({med[arm] / med['default']:.2f}x)" for arm in ARMS)
          + f"; load {min(r['load'] for r in rows):.1f}-{max(r['load'] for r in rows):.1f}")


if __name__ == "__main__":
    main()
