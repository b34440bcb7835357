"""`genevolve train` restarts itself with glibc malloc tunables so that big freed blocks stay in the
heap: checked on a real process by what the kernel reports, not by the variable alone."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from genevolve.training.allocator import TUNABLES, training_environment

REPO = Path(__file__).resolve().parents[2]
glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                reason="glibc malloc tunables")

# Touches a 256 MiB malloc block, frees it, and prints the resident set before and after the free.
PROBE = """
import ctypes, os, sys
sys.path.insert(0, sys.argv[1])
if len(sys.argv) > 2:
    from genevolve.training.allocator import restart_tuned_for_training
    restart_tuned_for_training()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
size = 256 << 20
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
p = libc.malloc(size)
ctypes.memset(p, 1, size)
held = rss()
libc.free(ctypes.c_void_p(p))
print(os.environ.get("GLIBC_TUNABLES", ""), held - rss())
"""


@glibc_only
def test_the_training_environment_adds_the_tunables_once_and_respects_a_choice():
    env = training_environment({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": TUNABLES}
    assert training_environment(env) is None  # already tuned: no second restart
    merged = training_environment({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX"})
    assert merged["GLIBC_TUNABLES"] == f"glibc.cpu.hwcaps=-AVX:{TUNABLES}"
    assert training_environment({"GENEVOLVE_MALLOC": "system"}) is None


@glibc_only
def test_a_restarted_process_keeps_a_freed_block_that_the_default_returns(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "GENEVOLVE_MALLOC")}
    script = tmp_path / "probe.py"
    script.write_text(PROBE, encoding="utf-8")

    def run(*extra: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, str(script), str(REPO), *extra], env=env, capture_output=True,
                             text=True, timeout=120, check=True).stdout.split()
        return (out[0], int(out[1])) if len(out) == 2 else ("", int(out[0]))

    tunables, released = run()
    assert tunables == "" and released > 200 << 20  # default: munmap hands the 256 MiB back
    tunables, released = run("restart")
    assert tunables == TUNABLES and released < 16 << 20  # tuned: the block stays for the next tile
