"""Checkpoints that resume exactly: weights (or the LoRA adapter), optimizer, schedule, RNG, step.

``checkpoints/step-000040/`` holds ``model/`` (``save_pretrained`` output: the adapter for
LoRA, full weights otherwise, loadable as ``hf:<dir>`` / ``adapter=<dir>``), ``trainer.pt``
(optimizer, scheduler, step, trainer extras) and ``rng.pt`` (python, numpy, torch states).
``checkpoints/latest`` names the newest complete checkpoint; it is written last, so a run
killed mid-save resumes from the previous one.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from genevolve.training.rng import rng_state, set_rng_state


def save_checkpoint(root: str | Path, step: int, model, optimizer, scheduler, extra: dict | None = None,
                    tokenizer=None, keep: int = 3, dist=None) -> Path:
    """Write a checkpoint; with several processes every rank calls it (a collective).

    Rank 0 writes weights, optimizer, scheduler and its RNG; the other ranks add only their RNG
    (``rng-<rank>.pt``): weights and optimizer state are identical on every rank. Under DeepSpeed
    the optimizer state is sharded and not kept (weights-only resume)."""
    import torch

    root = Path(root)
    path = root / f"step-{step:06d}"
    if dist is not None and dist.by_hand:
        tmp = root / f".tmp-step-{step:06d}"
        if dist.is_main:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            _write(tmp, model, optimizer, scheduler, extra, tokenizer, step)
        dist.wait()
        if not dist.is_main:
            torch.save(rng_state(), tmp / f"rng-{dist.rank}.pt")
        dist.wait()
        if dist.is_main:
            _publish(root, tmp, path, keep)
        dist.wait()
        return path
    if dist is not None and dist.accelerator is not None:
        state = dist.accelerator.get_state_dict(model)  # collective under ZeRO-3
        if dist.is_main:
            root.mkdir(parents=True, exist_ok=True)
            dist.unwrap(model).save_pretrained(path / "model", state_dict=state)
            if tokenizer is not None:
                tokenizer.save_pretrained(path / "model")
            torch.save({"step": step, "optimizer": None, "scheduler": scheduler.state_dict(), "extra": extra or {}},
                       path / "trainer.pt")
            torch.save(rng_state(), path / "rng.pt")
            (root / "latest").write_text(path.name)
        dist.wait()
        return path
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    _write(tmp, model, optimizer, scheduler, extra, tokenizer, step)
    _publish(root, tmp, path, keep)
    return path


def _write(tmp: Path, model, optimizer, scheduler, extra, tokenizer, step: int | None = None) -> None:
    import torch

    step = int(tmp.name.rsplit("-", 1)[1]) if step is None else step
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "model")
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp / "model")
    torch.save({"step": step, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "extra": extra or {}}, tmp / "trainer.pt")
    torch.save(rng_state(), tmp / "rng.pt")


def _publish(root: Path, tmp: Path, path: Path, keep: int) -> None:
    """Move a complete checkpoint into place, then point ``latest`` at it (written last)."""
    shutil.rmtree(path, ignore_errors=True)
    tmp.replace(path)
    (root / "latest.tmp").write_text(path.name)
    (root / "latest.tmp").replace(root / "latest")
    _prune(root, keep)


def _prune(root: Path, keep: int) -> None:
    protected = set()
    for marker in ("latest", "best"):
        if (root / marker).is_file():
            protected.add((root / marker).read_text().strip())
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for p in steps[:-keep] if keep > 0 else []:
        if p.name not in protected:
            shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(root: str | Path) -> Path | None:
    marker = Path(root) / "latest"
    if not marker.is_file():
        return None
    path = Path(root) / marker.read_text().strip()
    return path if (path / "trainer.pt").is_file() else None


def mark_best(root: str | Path, path: Path) -> None:
    (Path(root) / "best.tmp").write_text(path.name)
    (Path(root) / "best.tmp").replace(Path(root) / "best")


def load_checkpoint(path: str | Path, model, optimizer, scheduler, rank: int = 0) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this rank's RNG in place; return ``{"step", "extra"}``.

    Every rank loads the same checkpoint (weights and optimizer come from rank 0's files)."""
    import torch

    path = Path(path)
    load_weights(model, path / "model")
    state = torch.load(path / "trainer.pt", weights_only=False)
    if state.get("optimizer") is not None:  # None: written by a DeepSpeed run (weights-only resume)
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng = path / f"rng-{rank}.pt" if rank else path / "rng.pt"
    set_rng_state(torch.load(rng if rng.is_file() else path / "rng.pt", weights_only=False))
    return {"step": state["step"], "extra": state.get("extra", {})}


def load_weights(model, model_dir: Path) -> None:
    """Load saved weights into an existing (possibly LoRA-wrapped) model, exactly."""
    from safetensors.torch import load_file

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no weights in {model_dir}")
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        state = {}
        for f in files:
            state.update(load_file(f))
        set_peft_model_state_dict(model, state)
        return
    state = {}
    for f in files:
        state.update(load_file(f))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied embeddings are saved once; anything else missing is a real mismatch.
    real_missing = [k for k in missing if "lm_head" not in k]
    if real_missing or unexpected:
        raise RuntimeError(f"checkpoint {model_dir} does not fit the model: missing {real_missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
