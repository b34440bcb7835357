"""The process group of a training run: one process, several (torchrun / accelerate launch), or
DeepSpeed ZeRO-3; and whether this process is the main one (rank 0), which alone writes run files."""

from __future__ import annotations

import os

from genevolve.specs import env_flag


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
