"""Start a plain GRPO run from step N of another GRPO run (``GRPOConfig.fork_from``).

Why: SDL's effect is a paired comparison. SDL's gate cannot open before a prompt's second visit,
so the first steps of a GRPO+SDL run train exactly as plain GRPO does; a plain run that starts
from that run's checkpoint at step N (weights, optimizer, schedule and RNG state) shares those N
steps with it, and the two runs differ only in what SDL does after. Both then see the same
prompts in the same order, and their first step after N samples the same rollouts.

The fork copies the checkpoint and the source's metrics and rollout rows up to step N into the new
run folder, without SDL's columns, and marks the checkpoint ``latest``: from there the run resumes
as any run does. It refuses a source whose SDL already trained at or before step N, because the
fork would then not be plain GRPO.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from genevolve.training.metrics import RunFiles, read_metrics, read_rows

# What only an SDL run logs: the metrics row's columns and timings.
SDL_COLUMNS = ("guide_hit_rate", "guides_added", "buffer_size", "sdl_loss", "sdl_kl", "sdl_kept_tokens",
               "sdl_samples")
SDL_TIMINGS = ("retrieve_s", "distill_s", "teacher_sdl_s")


def _plain(row: dict) -> dict:
    out = {k: v for k, v in row.items() if k not in SDL_COLUMNS}
    if isinstance(out.get("timings"), dict):
        out["timings"] = {k: v for k, v in out["timings"].items() if k not in SDL_TIMINGS}
    return out


def fork_step(checkpoint: str | Path) -> int:
    """The step of a TRL ``checkpoint-N`` folder, or a clear error."""
    path = Path(checkpoint).expanduser()
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    if match is None or not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(f"fork_from: {path} is not a complete checkpoint folder (checkpoint-N with "
                                f"trainer_state.json); pick one under another GRPO run's checkpoints/")
    return int(match.group(1))


def fork_run_folder(checkpoint: str | Path, files: RunFiles, *, sdl_enabled: bool, write: bool = True) -> bool:
    """Seed ``files``' run folder from ``checkpoint``; False when the folder has a checkpoint of its
    own already (a forked run that was resumed: the fork happened on its first start). With
    ``write`` false it only checks the source (the other ranks of a multi-process run)."""
    if files.latest_trl_checkpoint() is not None:
        return False
    if sdl_enabled:
        raise ValueError("fork_from starts a plain GRPO run (sdl.enabled: false): an SDL run forked from "
                         "another would lack the guides of the source's steps")
    source_ckpt = Path(checkpoint).expanduser()
    step = fork_step(source_ckpt)
    source = source_ckpt.parent.parent  # <run>/checkpoints/checkpoint-N
    if source.resolve() == files.dir.resolve():
        raise ValueError(f"fork_from: {source_ckpt} is in this run's own folder; fork into a new run_dir")
    metrics = [r for r in read_metrics(source) if r.get("step", 0) <= step]
    if [r.get("step") for r in metrics] != list(range(1, step + 1)):
        raise ValueError(f"fork_from: {source / 'metrics.jsonl'} lacks rows for steps 1-{step}; "
                         f"a fork shares the source's history up to its checkpoint")
    trained = [r["step"] for r in metrics if r.get("sdl_samples")]
    if trained:
        raise ValueError(f"fork_from: SDL already trained at step(s) {trained} of {source}, so its step {step} "
                         f"is not plain GRPO; fork from checkpoint-{trained[0] - 1} or earlier")
    if not write:
        return False
    files.start_clean(["rollouts.jsonl"])
    files.checkpoints.mkdir(parents=True)
    shutil.copytree(source_ckpt, files.checkpoints / source_ckpt.name)
    rollouts = [r for r in read_rows(source / "rollouts.jsonl") if r.get("step", 0) <= step]
    for name, rows in (("metrics.jsonl", metrics), ("rollouts.jsonl", rollouts)):
        with open(files.dir / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(_plain(r), ensure_ascii=False) + "\n" for r in rows)
    files.mark_latest(source_ckpt.name)
    return True
