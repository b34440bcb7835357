"""Faster one-token decoding on CPU: bf16 linear weights packed once for oneDNN, lean LoRA.

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

``lean_lora`` runs a LoRA adapter's modules without peft's per-call dispatch, and lets the
projections that share an input (q/k/v, gate/up) share one LoRA product: the same numbers, bit for
bit, for inference.
"""

from __future__ import annotations

# A packed product beats the per-call reorder up to a few rows (measured on the 262,144 x 640
# lm_head: 1, 4 and 6 rows all about 2x faster); prefill's hundreds of rows amortize the reorder.
PACKED_MAX_ROWS = 16


class PatchedModules:
    """The modules a speed-up gave their own ``forward`` (``pack_linears``, ``lean_lora``);
    ``remove()`` puts the class's forward back and drops what the patch kept on them."""

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


def pack_linears(model, *, min_params: int = 0, frozen_only: bool = False) -> PatchedModules:
    """Pack every bf16 ``nn.Linear`` of a CPU model (peft's LoRA base layers included) for decoding.

    Returns the handle (empty when nothing could be packed: another device or dtype, or a torch
    without oneDNN bf16). ``min_params`` skips smaller weights; ``frozen_only`` skips weights that
    require grad (a packed copy would not follow the optimizer)."""
    import torch

    if not packing_supported():
        return PatchedModules([])
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
    return PatchedModules(done)


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


# ---------------------------------------------------------------------------- LoRA at decode time

# Projections that one decoder layer applies to the same input tensor, in the order it calls them
# (Gemma, Llama, Qwen and Mistral attention and MLP): the first computes the LoRA down-projection
# of the whole group in one product, the later ones take their share of it.
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def lean_lora(model, *, max_rows: int = PACKED_MAX_ROWS) -> PatchedModules:
    """Decode-time LoRA without peft's per-call bookkeeping, for a frozen inference model.

    peft's ``lora.Linear.forward`` checks adapters, casts and dispatches in Python on each of
    Gemma 3 270M's 126 LoRA modules, about a fifth of a one-token forward pass on two cores. Here
    each vanilla LoRA module (one adapter, no dropout, unmerged) computes what peft computes, in the
    same order and dtypes: ``(base(x) + B(A(x.to(A.dtype))) * scaling).to(base dtype)``. Siblings
    that see the same input (q/k/v, gate/up) share one product with their concatenated ``A`` when
    the input has at most ``max_rows`` rows (decoding and drafts; bit-identical there, checked by
    the tests; a long prefill keeps one product each). The concatenation is a copy, so this is for
    inference only: autograd on, adapters disabled or merged, and peft's own forward runs."""
    import torch

    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:
        return PatchedModules([])
    done: list = []
    for parent in model.modules():
        for names in SIBLINGS:
            group = [getattr(parent, n, None) for n in names]
            if all(isinstance(m, LoraLinear) and _vanilla(m) for m in group):
                done.extend(_lean_group(group, max_rows, torch))
    for module in model.modules():
        if isinstance(module, LoraLinear) and _vanilla(module) and "forward" not in module.__dict__:
            done.extend(_lean_group([module], max_rows, torch))
    return PatchedModules(done)


def _vanilla(module) -> bool:
    import torch

    adapters = list(module.lora_A.keys())
    return (len(adapters) == 1 and list(module.active_adapters) == adapters and not module.merged
            and not module.lora_variant and isinstance(module.lora_dropout[adapters[0]], torch.nn.Identity)
            and "forward" not in module.__dict__)


def _lean_group(group: list, max_rows: int, torch) -> list:
    F = torch.nn.functional
    name = group[0].active_adapters[0]
    bases = [m.base_layer for m in group]
    downs = [m.lora_A[name].weight for m in group]
    ups = [m.lora_B[name].weight for m in group]
    scales = [m.scaling[name] for m in group]
    joint = torch.cat([a.detach() for a in downs], 0) if len(group) > 1 else None
    widths = [a.shape[0] for a in downs]
    shared: dict = {}

    def usable(module) -> bool:
        return not (torch.is_grad_enabled() or module.disable_adapters or module.merged)

    def own(i, x):
        y = bases[i](x)
        return (y + F.linear(F.linear(x.to(downs[i].dtype), downs[i]), ups[i]) * scales[i]).to(y.dtype)

    def first(x, *args, **kwargs):
        if args or kwargs or not usable(group[0]):
            return type(group[0]).forward(group[0], x, *args, **kwargs)
        shared.clear()
        if joint is None or x.numel() > max_rows * x.shape[-1]:
            return own(0, x)
        low = F.linear(x.to(joint.dtype), joint).split(widths, -1)
        ys = []
        for base, up, scale, part in zip(bases, ups, scales, low):
            y = base(x)
            ys.append((y + F.linear(part, up) * scale).to(y.dtype))
        # Kept only until the group's next call; x's version says it was not written to in between.
        shared.update(x=x, version=x._version, ys=ys)
        return ys[0]

    def later(i):
        def forward(x, *args, **kwargs):
            if args or kwargs or not usable(group[i]):
                return type(group[i]).forward(group[i], x, *args, **kwargs)
            if shared.get("x") is x and shared["version"] == x._version:
                return shared["ys"][i]
            return own(i, x)
        return forward

    group[0].forward = first
    for i in range(1, len(group)):
        group[i].forward = later(i)
    return group
