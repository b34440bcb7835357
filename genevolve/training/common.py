"""What both trainers share at run time: seeding, optimizer and schedule, a clean stop on SIGTERM,
and the process group (``Distributed``). Config loading lives in ``config.py`` (re-exported here)."""

from __future__ import annotations

import os
import random
import signal
import threading

from genevolve.specs import env_flag
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
    """The process group of the SFT loop: one process, several processes, or DeepSpeed ZeRO-3.

    - One process (the tests' default path): every method is a plain no-op.
    - Several processes without DeepSpeed (``torchrun`` / ``accelerate launch``, CPU with gloo or
      GPUs with NCCL): the model is NOT wrapped in DDP. Our loss calls decoder sub-modules directly
      (hidden states, then the output head only at loss positions), which bypasses DDP's forward,
      and DDP then never synchronises gradients. Instead every rank starts from rank 0's weights,
      scales its loss by the global number of loss tokens, and ``sync_gradients`` sums the
      gradients over ranks in one all-reduce, so each step equals a one-process step over the
      union of the ranks' batches.
    - DeepSpeed (``configs/accelerate_zero3.yaml``): accelerate's engine; ZeRO-3 gathers parameters
      per module, so the direct sub-module calls work there.
    """

    def __init__(self):
        from accelerate.utils import DistributedType

        self.state = prepare_process_group()
        self.deepspeed = self.state.distributed_type == DistributedType.DEEPSPEED
        self.accelerator = None
        if self.deepspeed:
            from accelerate import Accelerator

            self.accelerator = Accelerator()

    @property
    def is_main(self) -> bool:
        return self.state.is_main_process

    @property
    def rank(self) -> int:
        return self.state.process_index

    @property
    def world(self) -> int:
        return self.state.num_processes

    @property
    def by_hand(self) -> bool:
        """Several processes that this class synchronises itself (no DeepSpeed engine)."""
        return self.world > 1 and not self.deepspeed

    def prepare(self, model, optimizer, scheduler):
        if self.accelerator is not None:
            return self.accelerator.prepare(model, optimizer, scheduler)
        if self.by_hand:
            import torch.distributed as tdist

            for p in model.parameters():  # every rank starts from rank 0's weights
                tdist.broadcast(p.data, src=0)
        return model, optimizer, scheduler

    def backward(self, loss) -> None:
        if self.accelerator is None:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def sync_gradients(self, params) -> None:
        """Sum the gradients over ranks (each rank's loss is already divided by the global count)."""
        if not self.by_hand:
            return
        import torch
        import torch.distributed as tdist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        params = list(params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = _flatten_dense_tensors(grads)
        tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
        for p, g in zip(params, _unflatten_dense_tensors(flat, grads)):
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (the values themselves on one process)."""
        if self.world == 1:
            return list(values)
        import torch

        t = torch.tensor(values, dtype=torch.float64, device=self.state.device)
        return self.state_reduce(t).tolist()

    def state_reduce(self, tensor):
        from accelerate.utils import reduce

        return reduce(tensor, reduction="sum")

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank says True (e.g. a SIGTERM that reached one process)."""
        return self.sum([1.0 if flag else 0.0])[0] > 0

    def clip_grad_norm(self, model, params, max_norm: float) -> float:
        import torch

        if self.accelerator is None:
            return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        return float(self.accelerator.clip_grad_norm_(model.parameters(), max_norm))

    def unwrap(self, model):
        return model if self.accelerator is None else self.accelerator.unwrap_model(model)

    def wait(self) -> None:
        if self.world > 1:
            self.state.wait_for_everyone()


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
