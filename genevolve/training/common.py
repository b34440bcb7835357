"""What both trainers share at run time: seeding, optimizer and schedule, a clean stop on SIGTERM,
and the process group (``Distributed``). Config loading lives in ``config.py`` (re-exported here)."""

from __future__ import annotations

import os
import random
import signal
import threading

from genevolve.training.config import config_from_dict, config_from_file, config_to_dict  # noqa: F401


def seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(params, lr: float, weight_decay: float, warmup_steps: int, total_steps: int):
    """AdamW with linear warm-up then cosine decay to 10% of the peak rate."""
    import torch
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, warmup_steps, max(total_steps, 1), min_lr_rate=0.1)
    return opt, sched


class GracefulStop:
    """SIGTERM/SIGINT set a flag; the trainer checkpoints at the end of the step and exits 0.

    The studio starts trainers as subprocesses and stops them with SIGTERM; a stop mid-step
    must never leave a half-written checkpoint.
    """

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second signal: give up waiting
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class Distributed:
    """accelerate (DeepSpeed ZeRO-3 via ``configs/accelerate_zero3.yaml``) when a launcher started
    us with several processes or DeepSpeed; on one CPU or GPU every method is a plain no-op, so
    the single-process path (the one the tests run) has no wrapper at all.

    Under ZeRO-3 the trainers call decoder sub-modules directly (hidden states, then the output
    head at loss positions); ZeRO-3 gathers parameters per module, so that works, whereas plain
    DDP would skip its gradient hooks: use the DeepSpeed config, not bare multi-GPU DDP.
    """

    def __init__(self):
        import os

        self.accelerator = None
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true") or \
                int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import Accelerator

            self.accelerator = Accelerator()

    @property
    def is_main(self) -> bool:
        return self.accelerator is None or self.accelerator.is_main_process

    @property
    def rank(self) -> int:
        return 0 if self.accelerator is None else self.accelerator.process_index

    @property
    def world(self) -> int:
        return 1 if self.accelerator is None else self.accelerator.num_processes

    def prepare(self, model, optimizer, scheduler):
        if self.accelerator is None:
            return model, optimizer, scheduler
        return self.accelerator.prepare(model, optimizer, scheduler)

    def backward(self, loss) -> None:
        if self.accelerator is None:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def clip_grad_norm(self, model, params, max_norm: float) -> float:
        import torch

        if self.accelerator is None:
            return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        return float(self.accelerator.clip_grad_norm_(model.parameters(), max_norm))

    def unwrap(self, model):
        return model if self.accelerator is None else self.accelerator.unwrap_model(model)

    def wait(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


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
    return PartialState(cpu=os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true"))


def is_main_process() -> bool:
    """Rank 0 (or the only process); safe to call before or without a process group."""
    return int(os.environ.get("RANK", "0")) == 0
