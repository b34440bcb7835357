"""Seeding a run (Python, NumPy, torch). The RNG state a checkpoint keeps, per process, is the
Trainer's (``rng_state*.pth``)."""

from __future__ import annotations

import random


def seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
