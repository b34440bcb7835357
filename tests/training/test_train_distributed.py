"""Both trainers under two CPU processes (torchrun, gloo), as the README launches them.

What must hold: the runs finish; rank 0 alone writes the run folder (one metrics row per step);
every rank ends with the same weights; a two-process SFT step equals a one-process step over
the same global batch; a two-process run killed with SIGKILL resumes and continues exactly.
Each launch costs ~20-40 s of start-up on two cores, so these are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "helpers" / "dist_train_worker.py"

# Three launches per resume test: well past the default timeout when the machine is loaded.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(autouse=True)
def _tiny_model_built_once():
    # Build the tiny model before the ranks start, so the launches below only load it.
    from genevolve.training.modeling import resolve_model_path

    resolve_model_path("tiny:gemma3")


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}


def _torchrun(nproc: int, kind: str, config: Path, out: Path, overrides: dict | None = None, **popen):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(WORKER), kind, str(config), str(out), json.dumps(overrides or {})]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


def _run(nproc: int, kind: str, config: Path, out: Path, overrides: dict | None = None, timeout: int = 1200) -> dict:
    proc = _torchrun(nproc, kind, config, out, overrides, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its ranks, not left behind
        proc.communicate()
        raise
    if proc.returncode != 0:
        # torchrun interleaves the ranks' stderr and the tail shows the rank that was stopped, not the
        # one that failed first: keep rank 0's own lines too.
        rank0 = "\n".join(line for line in stderr.splitlines() if "[rank0]" in line)[-4000:]
        pytest.fail(f"torchrun exited {proc.returncode}\n--- rank 0 ---\n{rank0}\n--- tail ---\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def _weights(out: Path, nproc: int) -> list[dict]:
    return [json.loads((out / f"params-rank{r}.json").read_text()) for r in range(nproc)]


def _metrics(run_dir: Path) -> list[dict]:
    from genevolve.training.metrics import read_metrics

    return read_metrics(run_dir)


def _close(a: dict, b: dict, keys, tol: float) -> list[str]:
    diffs = []
    for k in keys:
        x, y = a.get(k), b.get(k)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            if abs(x - y) > tol * max(1.0, abs(x)):
                diffs.append(f"{k}: {x} != {y}")
        elif x != y:
            diffs.append(f"{k}: {x} != {y}")
    return diffs


def _sft_config(tmp_path: Path, name: str, **kw) -> Path:
    config = yaml.safe_load((REPO / "configs" / "sft_tiny_cpu.yaml").read_text())
    config.update({"train_data": str(REPO / "configs" / "data" / "tiny_sft.jsonl"), "run_dir": str(tmp_path / name),
                   "max_steps": 6, "eval_every": 3, "save_every": 3, **kw})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _grpo_config(tmp_path: Path, name: str, **kw) -> Path:
    config = yaml.safe_load((REPO / "configs" / "grpo_tiny_cpu.yaml").read_text())
    config.update({"prompts": str(REPO / "configs" / "data" / "tiny_prompts.jsonl"), "run_dir": str(tmp_path / name),
                   "max_steps": 4, "prompts_per_step": 1, "save_steps": 2,
                   "agent": {"system_prompt_path": str(REPO / "configs" / "data" / "tiny_system.md"), "max_rounds": 1},
                   "sdl": {**config["sdl"], "store_path": str(tmp_path / f"{name}.db")}, **kw})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_process_sft_matches_one_process_with_the_same_global_batch(tmp_path):
    two = _run(2, "sft", _sft_config(tmp_path, "two", batch_size=2), tmp_path / "two-out")
    one = _run(1, "sft", _sft_config(tmp_path, "one", batch_size=4), tmp_path / "one-out")
    assert two["state"] == one["state"] == "done" and two["step"] == 6
    w = _weights(tmp_path / "two-out", 2)
    assert w[0]["sha256"] == w[1]["sha256"], w  # both ranks hold the same parameters
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [m["step"] for m in b] == list(range(1, 7))  # rank 0 alone logs: one row per step
    for x, y in zip(a, b, strict=True):
        assert not _close(x, y, ("loss", "grad_norm", "lr", "eval_loss", "tokens"), 1e-4), (x["step"], x, y)
    assert abs(_weights(tmp_path / "one-out", 1)[0]["abs_sum"] - w[0]["abs_sum"]) < 1e-3 * w[0]["abs_sum"]
    status = json.loads((tmp_path / "two" / "status.json").read_text())
    assert status["state"] == "done" and status["step"] == 6 and status["world_size"] == 2
    ckpt = tmp_path / "two" / "checkpoints" / "checkpoint-6"
    assert (tmp_path / "two" / "checkpoints" / "latest").read_text().strip() == ckpt.name
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()
    assert (ckpt / "trainer_state.json").is_file() and (ckpt / "optimizer.pt").is_file()


def test_two_process_grpo_with_sdl_runs_to_the_end_with_whole_groups(tmp_path):
    result = _run(2, "grpo", _grpo_config(tmp_path, "run"), tmp_path / "out")
    assert result == {"state": "done", "step": 4, "run_dir": str(tmp_path / "run"), "signalled": False}
    w = _weights(tmp_path / "out", 2)
    assert w[0]["sha256"] == w[1]["sha256"], w
    metrics = _metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert all(m["terminations"] and sum(m["terminations"].values()) == 12 for m in metrics)  # 2 ranks x G=6
    assert any(m["grad_norm"] for m in metrics) and all("sdl_kl" in m and "buffer_size" in m for m in metrics)
    rows = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    for step in (1, 2, 3, 4):
        groups = [r for r in rows if r["step"] == step]
        assert sorted(r["rank"] for r in groups) == [0, 1] and all(len(r["rollouts"]) == 6 for r in groups)
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "checkpoint-4"
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-4" / "rng_state_1.pth").is_file()


def _kill_after(proc, metrics: Path, rows: int, deadline_s: float = 900) -> None:
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        if metrics.is_file() and metrics.read_text().count("\n") >= rows:
            break
        assert proc.poll() is None, proc.stderr.read()[-4000:]
        time.sleep(0.1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"no {rows} metric rows within {deadline_s} s")
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, no chance to checkpoint
    proc.communicate(timeout=60)


@pytest.mark.parametrize("kind", ["sft", "grpo"])
def test_two_process_run_killed_resumes_exactly(tmp_path, kind):
    make = _sft_config if kind == "sft" else _grpo_config
    steps = 6 if kind == "sft" else 5
    every = {"save_every": 2} if kind == "sft" else {"save_steps": 2}  # GRPO's config is TRL's: TRL's name
    straight = _run(2, kind, make(tmp_path, "straight", max_steps=steps, **every), tmp_path / "o1")
    assert straight["state"] == "done"
    config = make(tmp_path, "killed", max_steps=steps, **every)
    proc = _torchrun(2, kind, config, tmp_path / "o2", start_new_session=True)
    _kill_after(proc, tmp_path / "killed" / "metrics.jsonl", rows=3)
    assert len(_metrics(tmp_path / "killed")) >= 3  # rows past the step-2 checkpoint exist, to be cut
    resumed = _run(2, kind, config, tmp_path / "o2")
    assert resumed["state"] == "done" and resumed["step"] == steps
    a, b = _metrics(tmp_path / "straight"), _metrics(tmp_path / "killed")
    assert [m["step"] for m in b] == list(range(1, steps + 1))  # no step logged twice
    keys = ("loss", "grad_norm", "lr", "eval_loss") if kind == "sft" else \
        ("loss", "grad_norm", "lr", "reward_mean", "reward_std", "tokens", "sdl_kl", "guides_added", "buffer_size",
         "guide_hit_rate")
    for x, y in zip(a, b, strict=True):
        assert not _close(x, y, keys, 1e-5), (x["step"], _close(x, y, keys, 1e-5))
    assert _weights(tmp_path / "o1", 2)[0]["sha256"] == _weights(tmp_path / "o2", 2)[0]["sha256"]
