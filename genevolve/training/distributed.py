"""The process group of a training run (one process, or several under torchrun / accelerate launch),
and whether this process is the main one (rank 0), which alone writes run files. The trainers
themselves (TRL's, on accelerate) do the synchronisation: DDP, FSDP or DeepSpeed."""

from __future__ import annotations

import os

from genevolve.specs import env_flag


def _launched_with_several_processes() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def prepare_process_group():
    """accelerate's process state for this launch (one process: a plain no-op state).

    torchrun and ``accelerate launch --cpu`` both set WORLD_SIZE; on a machine without CUDA,
    accelerate treats such a launch as distributed only with ``ACCELERATE_USE_CPU=1`` (else every
    rank believes it is alone and they all write the same run folder), so it is set here.
    """
    import torch
    from accelerate import PartialState

    if _launched_with_several_processes() and not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")
    return PartialState(cpu=env_flag("ACCELERATE_USE_CPU"))


def is_main_process() -> bool:
    """Rank 0 (or the only process); safe to call before or without a process group."""
    return int(os.environ.get("RANK", "0")) == 0
