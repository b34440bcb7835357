"""The staged, resumable runner (genevolve.batch) alone, and a data build interrupted midway then resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from genevolve.batch import BatchRun, PerThread, Stage
from genevolve.config import Settings
from genevolve.data.pipeline import BuildConfig, DatasetBuilder, build_dataset

ROOT = Path(__file__).resolve().parents[2]
ITEMS = [{"id": f"i{n}", "n": n} for n in range(12)]


class Interrupted(BaseException):
    """Stands for Ctrl-C (pytest handles a real KeyboardInterrupt itself)."""


def test_rows_depend_on_the_item_not_on_the_worker_order(tmp_path):
    def square(item):
        time.sleep(0.001 * (12 - item["n"]))  # later items finish first
        return {"square": item["n"] ** 2}

    one = BatchRun(tmp_path / "one").run([Stage("sq", square)], ITEMS)
    many = BatchRun(tmp_path / "many").run([Stage("sq", square, workers=4)], ITEMS)
    assert one == many == {"sq": {"done_before": 0, "ran": 12, "failed": 0}}
    strip = lambda rows: {k: {f: v for f, v in r.items() if f != "elapsed_s"} for k, r in rows.items()}  # noqa: E731
    assert strip(BatchRun(tmp_path / "one").rows("sq")) == strip(BatchRun(tmp_path / "many").rows("sq"))
    assert [r["square"] for r in BatchRun(tmp_path / "many").ordered("sq", ITEMS)] == [n * n for n in range(12)]


def test_a_stage_that_stops_midway_resumes_where_it_stopped(tmp_path):
    seen: list[str] = []
    stopped = []

    def flaky(item):
        if item["n"] == 5 and not stopped:
            stopped.append(1)
            raise Interrupted  # the run is stopped at the sixth item
        seen.append(item["id"])
        return {"n2": item["n"] * 2}

    run = BatchRun(tmp_path)
    with pytest.raises(Interrupted):
        run.run([Stage("double", flaky)], ITEMS)
    assert len(run.rows("double", fresh=True)) == 5
    # A kill mid-write leaves a torn line: it is cut off and that item runs again.
    ledger = run.ledger("double")
    ledger.write_bytes(ledger.read_bytes() + b'{"id": "i5", "n2"')
    counts = BatchRun(tmp_path).run([Stage("double", flaky)], ITEMS)["double"]
    assert counts == {"done_before": 5, "ran": 7, "failed": 0}
    assert seen == [f"i{n}" for n in range(12)]  # every item exactly once
    assert ledger.read_text().count("\n") == 12 and ledger.read_text().endswith("\n")


def test_retries_then_a_recorded_failure_that_a_rerun_keeps(tmp_path):
    calls: dict[str, int] = {}

    def fails_on_odd(item):
        calls[item["id"]] = calls.get(item["id"], 0) + 1
        if item["n"] % 2:
            raise ValueError(f"odd {item['n']}")
        return {"status": "ok"}

    stage = Stage("even", fails_on_odd, workers=3, retries=2, backoff_s=0.0, head=lambda item: {"stage": "even"},
                  applies=lambda item: item["n"] < 4)
    counts = BatchRun(tmp_path).run_stage(stage, ITEMS)
    assert counts == {"done_before": 0, "ran": 4, "failed": 2}
    rows = BatchRun(tmp_path).rows("even")
    assert rows["i1"]["status"] == "failed" and rows["i1"]["error"] == "ValueError: odd 1"
    assert rows["i1"]["attempts"] == 3 and rows["i0"]["attempts"] == 1 and rows["i0"]["stage"] == "even"
    assert list(rows["i0"])[:2] == ["id", "stage"]
    assert calls == {"i0": 1, "i1": 3, "i2": 1, "i3": 3}
    assert BatchRun(tmp_path).run_stage(stage, ITEMS)["done_before"] == 4 and sum(calls.values()) == 8


def test_per_thread_builds_one_value_per_worker_thread():
    built = []
    value = PerThread(lambda: built.append(threading.get_ident()) or object())
    mine = value()
    assert value() is mine
    other = []
    t = threading.Thread(target=lambda: other.append(value()))
    t.start()
    t.join()
    assert other[0] is not mine and len(built) == 2


# ---------------------------------------------------------------- a data build interrupted midway

N = 8


def _settings(tmp: Path) -> Settings:
    # No tool cache: a cached image result points into the cache, a fresh one into the library.
    return Settings(offline=True, extra={"library_embeddings": False}, runs_dir=str(tmp / "runs"), cache_mode="off")


def _config() -> BuildConfig:
    return BuildConfig(recipes=N, seed=0, parallel=2, size=(320, 320), offline=True, val_fraction=0.25,
                       held_out=True)


def _outputs(out: Path) -> dict[str, bytes]:
    """Every file of a build but the stage ledgers and the manifest (they hold timings)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.parent.name != "stages" and p.name != "manifest.json"}


def _without_timings(out: Path) -> tuple[dict, dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("elapsed_s"), manifest.pop("stage_seconds")
    ledgers = {}
    for path in sorted((out / "stages").glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for row in rows:
            row.pop("elapsed_s")
            (row.get("trajectory") or {}).pop("created_at", None)
            (row.get("trajectory") or {}).pop("elapsed_s", None)
            for step in (row.get("trajectory") or {}).get("steps", []):
                for key in ("policy_s", "tool_s", "round_s"):
                    step.pop(key, None)
            (row.get("trajectory") or {}).pop("round_timings", None)
        ledgers[path.name] = sorted(rows, key=lambda r: r["id"])
    return manifest, ledgers


class _StopsAtTheThirdGT(DatasetBuilder):
    """A build stopped in its last stage: the third ground-truth render is interrupted."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.renders = 0

    def do_gt(self, recipe, traj_row):
        self.renders += 1
        if self.renders >= 3:
            raise Interrupted
        return super().do_gt(recipe, traj_row)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("whole")
    build_dataset(tmp / "build", _config(), settings=_settings(tmp))
    return tmp / "build"


def test_a_build_stopped_in_a_stage_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path):
    out = tmp_path / "build"
    with pytest.raises(Interrupted):
        _StopsAtTheThirdGT(out, _config(), settings=_settings(tmp_path), progress=False).run()
    assert not (out / "train.jsonl").exists()  # it stopped before the splits were written
    assert len(BatchRun(out / "stages").rows("gt")) == 2
    manifest = build_dataset(out, _config(), settings=_settings(tmp_path), resume=True)
    assert manifest["counts"]["kept"] > 2
    assert _outputs(out) == _outputs(uninterrupted)
    assert _without_timings(out) == _without_timings(uninterrupted)


def test_a_build_killed_by_sigkill_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path):
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps({"extra": {"library_embeddings": False}, "runs_dir": str(tmp_path / "runs"),
                                         "cache_mode": "off"}))
    out = tmp_path / "build"
    args = [sys.executable, "-m", "genevolve.cli", "data", "build", "--out", str(out), "--recipes", str(N),
            "--seed", "0", "--size", "320x320", "--parallel", "2", "--val-fraction", "0.25", "--held-out",
            "--offline", "--no-progress", "--config", str(settings_file)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ledger = out / "stages" / "trajectories.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ledger.exists() and ledger.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the build finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert 3 <= ledger.read_bytes().count(b"\n") < N and not (out / "train.jsonl").exists()
    resumed = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _outputs(out) == _outputs(uninterrupted)
    assert _without_timings(out) == _without_timings(uninterrupted)


def test_a_second_process_on_the_same_ledger_is_refused_and_a_killed_holder_frees_it(tmp_path):
    """Two runs filling one stage ledger would both do every item left and append each twice: while a
    real second process runs the stage, this one is refused with what to do, and appends nothing;
    once that process is killed, the stage runs here and resumes after the rows it wrote."""
    from genevolve.batch import LedgerBusy

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1])\n"
        "from genevolve.batch import BatchRun, Stage\n"
        "def slow(item):\n"
        "    print(item['id'], flush=True); time.sleep(0.5 if item['n'] == 0 else 60); return {'n': item['n']}\n"
        "BatchRun(sys.argv[2]).run([Stage('sq', slow)], [{'id': f'i{n}', 'n': n} for n in range(12)])\n"),
        str(ROOT), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "i0"
        assert holder.stdout.readline().strip() == "i1"  # i0's row is written; i1 is running
        with pytest.raises(LedgerBusy, match="another process is running the sq stage"):
            BatchRun(tmp_path).run([Stage("sq", lambda item: {"n": item["n"]})], ITEMS)
        assert list(BatchRun(tmp_path).rows("sq")) == ["i0"]
    finally:
        holder.kill()
        holder.wait()
    counts = BatchRun(tmp_path).run([Stage("sq", lambda item: {"n": item["n"]})], ITEMS)
    assert counts == {"sq": {"done_before": 1, "ran": 11, "failed": 0}}
