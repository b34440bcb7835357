"""Training on CPU keeps the memory it frees instead of handing it back to the kernel.

glibc's malloc serves every block over its mmap threshold (at most 32 MiB by default) with a fresh
``mmap`` and returns it with ``munmap`` on free. The log-probability pass over Gemma's 262,144-token
vocabulary allocates temporaries of hundreds of MiB per tile, so each one is faulted in page by page
and zeroed by the kernel, again on every tile: in a GRPO update on this 2-core CPU the process
spent more time in the kernel than in its own code (``benchmarks/cpu_allocator.py``). Raising the
mmap and trim thresholds keeps those blocks in the heap for reuse; the cost is that the process
holds on to its peak memory until it exits.

``genevolve train ...`` re-runs itself once with these tunables (``GLIBC_TUNABLES`` is read only
when a process starts). ``GENEVOLVE_MALLOC=system`` keeps the default allocator.
"""

from __future__ import annotations

import os
import platform
import sys

# 4 GiB: no tile of a 262,144-wide vocabulary comes near it; 16 GiB: never trim a training heap.
TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


def training_environment(environ: dict[str, str]) -> dict[str, str] | None:
    """The environment a training process should start with, or None when ``environ`` will do
    (not Linux with glibc, already tuned, or the user chose the system allocator)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    if environ.get("GENEVOLVE_MALLOC", "").strip().lower() in ("system", "0", "off", "no"):
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.mmap_threshold" in current:
        return None
    return {**environ, "GLIBC_TUNABLES": f"{current}:{TUNABLES}" if current else TUNABLES}


def restart_tuned_for_training() -> None:
    """Replace this process with the same command line under the training allocator settings
    (returns only when nothing needs to change). Call it before anything heavy is imported."""
    env = training_environment(dict(os.environ))
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
