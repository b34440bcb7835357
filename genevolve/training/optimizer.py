"""The optimizer and learning-rate schedule both trainers use."""

from __future__ import annotations


def make_optimizer(params, lr: float, weight_decay: float, warmup_steps: int, total_steps: int):
    """AdamW with linear warm-up then cosine decay to 10% of the peak rate."""
    import torch
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, warmup_steps, max(total_steps, 1), min_lr_rate=0.1)
    return opt, sched
