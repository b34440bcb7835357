"""Start a GRPO run from step N of another GRPO run (``GRPOConfig.fork_from``).

Why: SDL's effect is a paired comparison. SDL's gate cannot open before a prompt's second visit,
so the first steps of a GRPO+SDL run train exactly as plain GRPO does; a plain run that starts
from that run's checkpoint at step N (weights, optimizer, schedule and RNG state) shares those N
steps with it, and the two runs differ only in what SDL does after. Both then see the same
prompts in the same order, and their first step after N samples the same rollouts.

The fork copies the checkpoint and the source's metrics and rollout rows up to step N into the new
run folder, without SDL's columns, and marks the checkpoint ``latest``: from there the run resumes
as any run does. It refuses a source whose SDL already trained at or before step N, because the
fork would then not be plain GRPO.

A GRPO+SDL run may fork too (both arms of a pair from one checkpoint, e.g. to train on a changed
reward): it keeps SDL's columns and copies the Decision Guides the source wrote up to step N into its
own guide store, re-keyed to the new run, so its buffer is the source's at that step. Their
retrieval counts start again at 0; the source's counts include its later steps.
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


def _source_store_paths(source: Path) -> list[Path]:
    """Where run ``source`` may have kept its guides: its own folder (``train nano`` does), then the
    store its config.yaml names (a relative path is the source's working directory's, unknown
    here: tried from the current one)."""
    import yaml

    paths = [source / "guides.db"]
    try:
        named = (yaml.safe_load((source / "config.yaml").read_text(encoding="utf-8")) or {}).get("sdl", {})
        if isinstance(named, dict) and isinstance(named.get("store_path"), str):
            paths.append(Path(named["store_path"]).expanduser())
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    return paths


def _source_guides(source: Path, step: int) -> list[dict]:
    """The guides run ``source`` wrote up to ``step``, from the first of its stores that holds any."""
    from genevolve.store import Store

    run = source.resolve().as_posix()
    for store in (Store(p) for p in _source_store_paths(source) if p.is_file()):
        found = [g for g in store.list_guides()
                 if g["meta"].get("run") == run and int(g["meta"].get("step") or 0) <= step]
        if found:
            return found
    return []


def fork_run_folder(checkpoint: str | Path, files: RunFiles, *, sdl_enabled: bool, guide_store=None,
                    write: bool = True) -> bool:
    """Seed ``files``' run folder from ``checkpoint``; False when the folder has a checkpoint of its
    own already (a forked run that was resumed: the fork happened on its first start). With
    ``write`` false it only checks the source (the other ranks of a multi-process run). An SDL
    fork copies the source's guides up to the checkpoint's step into ``guide_store``."""
    if files.latest_trl_checkpoint() is not None:
        return False
    if sdl_enabled and guide_store is None:
        raise ValueError("fork_from with sdl.enabled needs the guide store the fork writes to")
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
    if trained and not sdl_enabled:
        raise ValueError(f"fork_from: SDL already trained at step(s) {trained} of {source}, so its step {step} "
                         f"is not plain GRPO; fork from checkpoint-{trained[0] - 1} or earlier")
    guides = _source_guides(source, step) if sdl_enabled else []
    if sdl_enabled:
        run = source.resolve().as_posix()
        shared = [g for g in guide_store.list_guides() if g["meta"].get("run") == run]
        if shared:  # copies would sit beside the originals, and the source's later guides would be retrieved
            raise ValueError(f"fork_from: the fork's guide store holds {len(shared)} guide(s) of {source} itself; "
                             f"give the fork its own sdl.store_path (train grpo --guide-store)")
    added = sum(int(r.get("guides_added") or 0) for r in metrics)
    if sdl_enabled and added and not guides:  # the wrong store: the fork's buffer would start empty
        looked = ", ".join(str(p) for p in _source_store_paths(source))
        raise ValueError(f"fork_from: {source}'s metrics count {added} guide(s) added by step {step} but none "
                         f"were found in {looked}; copy the source's guide store to "
                         f"{source / 'guides.db'}")
    if not write:
        return False
    files.start_clean(["rollouts.jsonl"])
    files.checkpoints.mkdir(parents=True)
    shutil.copytree(source_ckpt, files.checkpoints / source_ckpt.name)
    rollouts = [r for r in read_rows(source / "rollouts.jsonl") if r.get("step", 0) <= step]
    for name, rows in (("metrics.jsonl", metrics), ("rollouts.jsonl", rollouts)):
        with open(files.dir / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r if sdl_enabled else _plain(r), ensure_ascii=False) + "\n" for r in rows)
    run = files.dir.resolve().as_posix()
    for g in guides:  # a fresh id; forked_from keeps the source's
        meta = {**g["meta"], "run": run, "forked_from": g["id"]}
        guide = {k: g[k] for k in ("created_at", "trigger", "summary", "guidance", "source_prompt", "reward_gap")}
        guide_store.add_guide({**guide, "meta": meta}, embedding=g["embedding"])
    files.mark_latest(source_ckpt.name)
    return True
