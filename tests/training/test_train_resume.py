"""Resume: a run stopped after k steps and resumed logs what an uninterrupted run logs; SIGTERM
checkpoints and exits cleanly."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Each test trains for real and most kill a process mid-run: minutes on a busy 2-core machine.
# One torch thread: the runs are compared step by step, and two cores are shared.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500), pytest.mark.usefixtures("torch_one_thread")]

REPO = Path(__file__).resolve().parents[2]
COMPARED = ("loss", "pg_loss", "reward_mean", "reward_std", "adv_std", "grad_norm", "lr", "tokens",
            "sdl_loss", "sdl_kl", "guide_hit_rate", "guides_added", "buffer_size")


def _same(a: dict, b: dict, keys) -> list[str]:
    diffs = []
    for k in keys:
        x, y = a.get(k), b.get(k)
        if isinstance(x, float) and isinstance(y, float):
            if abs(x - y) > 1e-5 * max(1.0, abs(x)):
                diffs.append(f"{k}: {x} != {y}")
        elif x != y:
            diffs.append(f"{k}: {x} != {y}")
    return diffs


def test_grpo_with_sdl_resumes_exactly(tmp_path):
    from genevolve.training.config import config_from_file
    from genevolve.training.grpo import GRPOConfig, train_grpo
    from genevolve.training.metrics import read_metrics, read_status

    def cfg(name: str, **kw):
        return config_from_file(GRPOConfig, REPO / "configs" / "grpo_tiny_cpu.yaml",
                                prompts=str(REPO / "configs" / "data" / "tiny_prompts.jsonl"),
                                agent={"system_prompt_path": str(REPO / "configs" / "data" / "tiny_system.md")},
                                run_dir=str(tmp_path / name), max_steps=5, save_steps=100,
                                sdl={"enabled": True, "delta_min": 0.5, "store_path": str(tmp_path / f"{name}.db")},
                                **kw)

    train_grpo(cfg("straight"), quiet=True)
    first = train_grpo(cfg("resumed", stop_after=2), quiet=True)
    assert first == {"state": "stopped", "step": 2, "run_dir": str(tmp_path / "resumed"), "signalled": False}
    assert read_status(tmp_path / "resumed")["state"] == "stopped"
    second = train_grpo(cfg("resumed"), quiet=True)
    assert second["state"] == "done" and second["step"] == 5
    a, b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [m["step"] for m in b] == [1, 2, 3, 4, 5]
    # The runs are worth comparing only if they learn and distil something.
    assert any(m["guides_added"] for m in a) and any(m["trained_samples"] for m in a)
    for x, y in zip(a, b, strict=True):
        assert not _same(x, y, COMPARED), (x["step"], _same(x, y, COMPARED))
    # Started again once done, the run resumes from its final checkpoint (step 5, mid-epoch: two
    # steps per epoch) and has nothing left to train: no sixth step, no sixth row.
    again = train_grpo(cfg("resumed"), quiet=True)
    assert again == {"state": "done", "step": 5, "run_dir": str(tmp_path / "resumed"), "signalled": False}
    assert [m["step"] for m in read_metrics(tmp_path / "resumed")] == [1, 2, 3, 4, 5]


def test_sft_resumes_exactly(tmp_path):
    from genevolve.training.config import config_from_file
    from genevolve.training.metrics import read_metrics
    from genevolve.training.sft import SFTConfig, train_sft

    def cfg(name: str, **kw):
        return config_from_file(SFTConfig, REPO / "configs" / "sft_tiny_cpu.yaml",
                                train_data=str(REPO / "configs" / "data" / "tiny_sft.jsonl"),
                                run_dir=str(tmp_path / name), max_steps=8, eval_every=3, batch_size=3, **kw)

    train_sft(cfg("straight"), quiet=True)
    assert train_sft(cfg("resumed", stop_after=4), quiet=True)["state"] == "stopped"
    train_sft(cfg("resumed"), quiet=True)
    a, b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [m["step"] for m in b] == list(range(1, 9))
    for x, y in zip(a, b, strict=True):
        assert not _same(x, y, ("loss", "eval_loss", "grad_norm", "lr", "tokens")), x["step"]


def test_sigterm_checkpoints_and_exits_cleanly(tmp_path):
    import yaml

    config = yaml.safe_load((REPO / "configs" / "sft_tiny_cpu.yaml").read_text())
    config.update(train_data=str(REPO / "configs" / "data" / "tiny_sft.jsonl"), run_dir=str(tmp_path / "run"),
                  max_steps=100000, save_every=100000, eval_every=100000)
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "genevolve.cli", "train", "sft", "--config", str(path)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert result["state"] == status["state"] == "stopped" and status["step"] == result["step"] >= 2
    assert result["signalled"] is True  # a caller (the nano recipe) stops too
    assert status["world_size"] == 1
    latest = (tmp_path / "run" / "checkpoints" / "latest").read_text().strip()
    assert latest == f"checkpoint-{result['step']}"
    assert (tmp_path / "run" / "checkpoints" / latest / "trainer_state.json").is_file()


def test_run_killed_before_its_first_checkpoint_starts_clean(tmp_path):
    """What a kill before the first save leaves (metric rows, no checkpoint) is not logged twice."""
    from genevolve.training.config import config_from_file
    from genevolve.training.metrics import read_metrics
    from genevolve.training.sft import SFTConfig, train_sft

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 9.0}) + "\n" for s in range(1, 6)))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "tmp-checkpoint-5").mkdir()  # a save the kill interrupted
    cfg = config_from_file(SFTConfig, REPO / "configs" / "sft_tiny_cpu.yaml",
                           train_data=str(REPO / "configs" / "data" / "tiny_sft.jsonl"), run_dir=str(run),
                           max_steps=3, eval_every=100, save_every=100)
    assert train_sft(cfg, quiet=True)["state"] == "done"
    rows = read_metrics(run)
    assert [m["step"] for m in rows] == [1, 2, 3] and all(m["loss"] != 9.0 for m in rows)
    assert not (run / "checkpoints" / "tmp-checkpoint-5").exists()


def test_torn_last_metrics_line_is_repaired_on_resume(tmp_path):
    from genevolve.training.config import config_from_file
    from genevolve.training.metrics import RunFiles, read_metrics
    from genevolve.training.sft import SFTConfig, train_sft

    def cfg(**kw):
        return config_from_file(SFTConfig, REPO / "configs" / "sft_tiny_cpu.yaml",
                                train_data=str(REPO / "configs" / "data" / "tiny_sft.jsonl"),
                                run_dir=str(tmp_path / "run"), max_steps=4, eval_every=100, save_every=100, **kw)

    assert train_sft(cfg(stop_after=2), quiet=True)["state"] == "stopped"
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 3, "loss": 1.2')  # a kill mid-write
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2]  # readers skip it
    assert train_sft(cfg(), quiet=True)["state"] == "done"
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3, 4]
    assert metrics.read_text().endswith("\n") and metrics.read_text().count("\n") == 4
    # A line that is not JSON in the middle is named, with what to do, rather than skipped silently.
    lines = metrics.read_text().splitlines()
    metrics.write_text(lines[0] + "\n" + "garbage\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not JSON.*fix or delete"):
        RunFiles(tmp_path / "run").truncate_metrics(2)


def test_plain_grpo_forked_from_an_sdl_run_shares_its_first_steps(tmp_path):
    """A plain run forked at step N of a GRPO+SDL run (before SDL's gate could open) starts from
    that checkpoint: it carries the source's first N rows without SDL's columns and then trains as
    a plain run from step 1 would."""
    from genevolve.training.config import config_from_file
    from genevolve.training.grpo import GRPOConfig, train_grpo
    from genevolve.training.metrics import read_metrics

    def cfg(name: str, sdl: bool, **kw):
        return config_from_file(GRPOConfig, REPO / "configs" / "grpo_tiny_cpu.yaml",
                                prompts=str(REPO / "configs" / "data" / "tiny_prompts.jsonl"),
                                agent={"system_prompt_path": str(REPO / "configs" / "data" / "tiny_system.md")},
                                run_dir=str(tmp_path / name), max_steps=4, save_steps=1,
                                sdl={"enabled": sdl, "delta_min": 0.5, "store_path": str(tmp_path / f"{name}.db")},
                                **kw)

    def rollouts(name: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / name / "rollouts.jsonl").read_text().splitlines()]

    train_grpo(cfg("plain", sdl=False), quiet=True)
    train_grpo(cfg("sdl", sdl=True), quiet=True)
    source = read_metrics(tmp_path / "sdl")
    # Two prompts a step, four prompts: steps 3-4 revisit them, so SDL can train only from step 3.
    assert all(not m["sdl_samples"] for m in source[:2]) and any(m["guides_added"] for m in source[:2])

    forked = train_grpo(cfg("fork", sdl=False, fork_from=str(tmp_path / "sdl" / "checkpoints" / "checkpoint-2")),
                        quiet=True)
    assert forked == {"state": "done", "step": 4, "run_dir": str(tmp_path / "fork"), "signalled": False}
    rows = read_metrics(tmp_path / "fork")
    assert [m["step"] for m in rows] == [1, 2, 3, 4]
    assert not any(k in m for m in rows for k in ("sdl_samples", "guide_hit_rate", "buffer_size"))
    assert [m["reward_mean"] for m in rows[:2]] == [m["reward_mean"] for m in source[:2]]
    assert rollouts("fork")[:4] == rollouts("sdl")[:4]  # steps 1-2, two groups each
    plain = read_metrics(tmp_path / "plain")
    keys = [k for k in COMPARED if not k.startswith(("sdl_", "guide")) and k != "buffer_size"]
    for x, y in zip(plain, rows, strict=True):
        assert not _same(x, y, keys), (x["step"], _same(x, y, keys))
    # Started again, the fork resumes from its own checkpoint; the source is no longer read.
    assert train_grpo(cfg("fork", sdl=False, fork_from=str(tmp_path / "gone" / "checkpoint-2")),
                      quiet=True)["step"] == 4

    with pytest.raises(FileNotFoundError, match="not a complete checkpoint folder"):
        train_grpo(cfg("bad", sdl=False, fork_from=str(tmp_path / "sdl" / "checkpoints")), quiet=True)
    # A source whose SDL trained by the fork's step is refused. The tiny policy answers in four
    # tokens with no decision tokens, so its SDL term never trains; a copy of the run whose step-2
    # row says what a real run's would (6 rollouts distilled) stands for one.
    shutil.copytree(tmp_path / "sdl", tmp_path / "trained")
    lines = (tmp_path / "trained" / "metrics.jsonl").read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "sdl_samples": 6})
    (tmp_path / "trained" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"SDL already trained at step\(s\) \[2\].*checkpoint-1 or earlier"):
        train_grpo(cfg("bad", sdl=False, fork_from=str(tmp_path / "trained" / "checkpoints" / "checkpoint-3")),
                   quiet=True)
    assert not (tmp_path / "bad" / "checkpoints").exists()  # nothing half-forked is left to resume from


def test_an_sdl_run_forked_from_an_sdl_run_takes_its_guides_up_to_the_fork(tmp_path):
    """Both arms of a pair can start from one checkpoint: an SDL fork copies the source's Decision
    Guides up to step N into its own store (re-keyed to itself), so from there it trains as the
    source did; a fork that cannot find the source's guides is refused rather than started with an
    empty buffer."""
    from genevolve.store import Store
    from genevolve.training.config import config_from_file
    from genevolve.training.grpo import GRPOConfig, train_grpo
    from genevolve.training.metrics import read_metrics

    def cfg(name: str, store: str | None = None, **kw):
        return config_from_file(GRPOConfig, REPO / "configs" / "grpo_tiny_cpu.yaml",
                                prompts=str(REPO / "configs" / "data" / "tiny_prompts.jsonl"),
                                agent={"system_prompt_path": str(REPO / "configs" / "data" / "tiny_system.md")},
                                run_dir=str(tmp_path / name), max_steps=4, save_steps=1,
                                sdl={"enabled": True, "delta_min": 0.5,
                                     "store_path": store or str(tmp_path / f"{name}.db")}, **kw)

    train_grpo(cfg("sdl"), quiet=True)
    source = read_metrics(tmp_path / "sdl")
    written = Store(tmp_path / "sdl.db").list_guides()
    by_step_2 = [g for g in written if g["meta"]["step"] <= 2]
    assert by_step_2 and len(by_step_2) < len(written)  # guides on both sides of the fork
    checkpoint = str(tmp_path / "sdl" / "checkpoints" / "checkpoint-2")

    # Sharing the source's store, the fork would retrieve the guides the source wrote after step 2.
    with pytest.raises(ValueError, match=r"holds \d+ guide\(s\) of .*sdl itself; give the fork its own"):
        train_grpo(cfg("shared", store=str(tmp_path / "sdl.db"), fork_from=checkpoint), quiet=True)
    assert not (tmp_path / "shared" / "checkpoints").exists()

    # The source's config.yaml names its store: found there.
    assert train_grpo(cfg("by_config", fork_from=checkpoint), quiet=True)["step"] == 4
    assert len(Store(tmp_path / "by_config.db").list_guides()) == len(written)
    # Moved away: refused, saying where it looked, rather than started with an empty buffer...
    with sqlite3.connect(tmp_path / "sdl.db") as src, sqlite3.connect(tmp_path / "moved.db") as dst:
        src.backup(dst)  # (a file copy would miss the WAL's rows)
    for leftover in tmp_path.glob("sdl.db*"):
        leftover.unlink()
    with pytest.raises(ValueError, match=r"guide\(s\) added by step 2 but none were found in .*sdl\.db"):
        train_grpo(cfg("lost", fork_from=checkpoint), quiet=True)
    assert not (tmp_path / "lost" / "checkpoints").exists()
    # ...and found in the source's own folder, where `train nano` keeps it.
    (tmp_path / "moved.db").rename(tmp_path / "sdl" / "guides.db")
    assert train_grpo(cfg("fork", fork_from=checkpoint), quiet=True)["step"] == 4
    rows = read_metrics(tmp_path / "fork")
    assert [m["step"] for m in rows] == [1, 2, 3, 4]
    for key in ("reward_mean", "guides_added", "buffer_size", "guide_hit_rate"):
        assert [m.get(key) for m in rows] == [m.get(key) for m in source], key  # the tiny SDL term never trains
    copied = Store(tmp_path / "fork.db").list_guides()
    run = (tmp_path / "fork").resolve().as_posix()
    assert len(copied) == len(written) and all(g["meta"]["run"] == run for g in copied)
    assert [g["summary"] for g in copied[:len(by_step_2)]] == [g["summary"] for g in by_step_2]
    assert {g["meta"]["forked_from"] for g in copied if "forked_from" in g["meta"]} == {g["id"] for g in by_step_2}


def test_a_second_trainer_on_a_run_folder_is_refused_while_the_first_runs(tmp_path):
    """Two trainers in one run folder would interleave their steps, metrics and checkpoints: while a
    real other process holds the folder, training there is refused with what to do and writes
    nothing; once that process is gone (killed), the same call trains."""
    from genevolve.training.config import config_from_file
    from genevolve.training.metrics import RunFolderBusy
    from genevolve.training.sft import SFTConfig, train_sft

    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1])\n"
        "from genevolve.training.metrics import RunFiles\n"
        "held = RunFiles(sys.argv[2]); held.hold(); print('held', flush=True); time.sleep(120)\n"), str(REPO), str(run)],
        stdout=subprocess.PIPE, text=True)
    cfg = config_from_file(SFTConfig, REPO / "configs" / "sft_tiny_cpu.yaml",
                           train_data=str(REPO / "configs" / "data" / "tiny_sft.jsonl"), run_dir=str(run),
                           max_steps=1, eval_every=100, save_every=100)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusy, match="another process is training in"):
            train_sft(cfg, quiet=True)
        assert not (run / "metrics.jsonl").exists() and not (run / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    assert train_sft(cfg, quiet=True)["state"] == "done"
    assert train_sft(cfg, quiet=True)["state"] == "done"  # and again in this process: nothing held over
