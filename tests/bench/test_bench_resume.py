"""kill -9 the bench CLI at many points, resume, and end exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from genevolve.bench.runner import read_jsonl, repair_jsonl

LIMIT = 6  # the first six mini-bench cases include two with exact text (OCR runs)
STAGES = ("rollout", "render", "judge")


def _cmd(out: Path, settings: Path) -> list[str]:
    return [sys.executable, "-m", "genevolve.cli", "bench", "run", "--bench", "mini", "--out", str(out),
            "--limit", str(LIMIT), "--parallel", "2", "--offline", "--size", "384x384", "--config", str(settings),
            "--no-progress", "--no-summary", "--resume"]


def _lines(out: Path) -> int:
    total = 0
    for s in STAGES:
        p = out / f"{s}.jsonl"
        if p.exists():
            total += p.read_bytes().count(b"\n")
    return total


def _launch_and_kill(cmd: list[str], out: Path, *, after_lines: int | None = None, after_s: float | None = None) -> bool:
    """Start the CLI and SIGKILL it once ``after_lines`` stage lines exist (or after ``after_s``).
    Returns whether it was killed (False: it finished first)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    started = time.monotonic()
    try:
        while proc.poll() is None:
            if after_lines is not None and _lines(out) >= after_lines:
                break
            if after_s is not None and time.monotonic() - started >= after_s:
                break
            if time.monotonic() - started > 120:
                pytest.fail("the bench run did not make progress within 120 s")
            time.sleep(0.01)
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")
            assert proc.returncode == 0, err
            return False
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "timing"}


def test_sigkill_at_many_points_then_resume_matches_uninterrupted(tmp_path):
    from genevolve.bench.summary import summarize

    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"extra": {"library_embeddings": False}}))
    baseline, crashed = tmp_path / "baseline", tmp_path / "crashed"

    subprocess.run(_cmd(baseline, settings), check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())
    expected_ids = sorted(r["id"] for r in read_jsonl(baseline / "rollout.jsonl"))
    assert len(expected_ids) == LIMIT

    kills = 0
    points = [dict(after_s=0.3), dict(after_lines=1), dict(after_lines=4), dict(after_lines=7),
              dict(after_lines=10), dict(after_lines=13), dict(after_lines=16)]
    for i, point in enumerate(points):
        kills += _launch_and_kill(_cmd(crashed, settings), crashed, **point)
        if i == 3:
            # What a kill in the middle of a write leaves behind: a torn last line.
            stage = next((s for s in reversed(STAGES) if (crashed / f"{s}.jsonl").exists()), "rollout")
            with open(crashed / f"{stage}.jsonl", "a") as f:
                f.write('{"id": "ka_arch_01", "stage": "' + stage + '", "sta')
    assert kills >= 5, f"only {kills} of the runs were killed before finishing"

    subprocess.run(_cmd(crashed, settings), check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())
    for stage in STAGES:
        raw = (crashed / f"{stage}.jsonl").read_text()
        assert raw.endswith("\n")
        counts = Counter(json.loads(line)["id"] for line in raw.splitlines() if line.strip())
        assert sorted(counts) == expected_ids and set(counts.values()) == {1}, (stage, counts)
    for cid in expected_ids:
        files = {p.name for p in (crashed / "cases" / cid).iterdir()}
        assert {"trajectory.json", "program.json", "image.png", "scores.json"} <= files
        assert not any(name.endswith(".tmp") for name in files)
    assert _comparable(summarize(crashed)) == _comparable(summarize(baseline))


def test_repair_jsonl_cuts_a_torn_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "st')
    assert repair_jsonl(p) == len('{"id": "c", "st')
    assert [r["id"] for r in read_jsonl(p)] == ["a", "b"] and p.read_text().endswith("\n")
    assert repair_jsonl(p) == 0
