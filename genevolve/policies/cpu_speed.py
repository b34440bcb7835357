"""Faster one-token decoding on CPU: bf16 linear weights packed once for oneDNN.

A plain ``F.linear`` in bf16 on CPU hands oneDNN a weight in PyTorch's layout, and oneDNN
reorders it into its blocked layout on every call. For one-token decoding that reorder costs
more than the product: Gemma 3 270M's lm_head (the tied 262,144 x 640 embedding, 335 MB in bf16)
is copied once per generated token. ``pack_linears`` reorders each bf16 weight once, at load,
and routes inputs of up to ``PACKED_MAX_ROWS`` rows (decoding one conversation, or a GRPO group's
turns in lock step) through oneDNN's packed linear; it computes the same product with the same
kernel (bit-identical logits, so greedy output is unchanged; the tests and
``benchmarks/nano_profile.py --pack both`` check it). Longer inputs (prefill) keep the plain path,
where the reorder is amortized over the rows.

Inference only: a packed copy does not follow later changes of its weight, so the packed path
is skipped while autograd records (training), ``frozen_only`` leaves weights an optimizer may
change alone (GRPO packs a LoRA model's frozen base for its rollouts), and ``remove()`` restores
the modules. The copies
take as much memory again as the packed weights (about +0.5 GB for nano).
"""

from __future__ import annotations

# A packed product beats the per-call reorder up to a few rows (measured on the 262,144 x 640
# lm_head: 1, 4 and 6 rows all about 2x faster); prefill's hundreds of rows amortize the reorder.
PACKED_MAX_ROWS = 16


class PackedLinears:
    """The modules ``pack_linears`` changed; ``remove()`` puts their own forward back."""

    def __init__(self, modules: list):
        self.modules = modules

    def __len__(self) -> int:
        return len(self.modules)

    def remove(self) -> None:
        for module in self.modules:
            module.__dict__.pop("forward", None)
            module.__dict__.pop("_packed_weight", None)
        self.modules = []


def packing_supported() -> bool:
    """oneDNN with native bf16 (AVX512-BF16 / AMX) in this torch build."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pack_linears(model, *, min_params: int = 0, frozen_only: bool = False) -> PackedLinears:
    """Pack every bf16 ``nn.Linear`` of a CPU model (peft's LoRA base layers included) for decoding.

    Returns the handle (empty when nothing could be packed: another device or dtype, or a torch
    without oneDNN bf16). ``min_params`` skips smaller weights; ``frozen_only`` skips weights that
    require grad (a packed copy would not follow the optimizer)."""
    import torch

    if not packing_supported():
        return PackedLinears([])
    done = []
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear) or "forward" in module.__dict__:
            continue
        w = module.weight
        if w.device.type != "cpu" or w.dtype != torch.bfloat16 or w.numel() < min_params:
            continue
        if frozen_only and (w.requires_grad or (module.bias is not None and module.bias.requires_grad)):
            continue
        if module.bias is not None and module.bias.dtype != torch.bfloat16:
            continue
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), 1)
        module._packed_weight = packed
        module.forward = _packed_forward(module)
        done.append(module)
    return PackedLinears(done)


def _packed_forward(module):
    import torch

    plain = type(module).forward.__get__(module)
    op = torch.ops.mkldnn._linear_pointwise

    def forward(x):
        # A few rows, bf16, nothing to differentiate: the packed product. Anything else: as before.
        if (x.dtype == torch.bfloat16 and x.numel() <= PACKED_MAX_ROWS * x.shape[-1]
                and not torch.is_grad_enabled() and x.device.type == "cpu"):
            bias = module.bias.detach() if module.bias is not None else None
            return op(x, module._packed_weight, bias, "none", [], "")
        return plain(x)

    return forward
