"""One SFT step on Gemma 3 270M over 1,024-token trajectories: how the logits are computed.
Peak memory and time, each variant in its own process so one cannot inherit the other's
high-water mark.

    python benchmarks/train_sft_logits.py [--model gemma3-270m|tiny:gemma3] [--tokens 1024] [--repeats 2]
                                          [--lora] [--checkpointing]

Variants: ``full`` (plain HF: ``model(...).logits`` then cross-entropy, ``logits: full``),
``fused`` (TRL's fused LM head, ``logits: fused``: log-probs in chunks, only at loss positions on a
GPU), ``selected`` (our ``modeling.selected_logprobs``: the output head only at the loss positions;
the hand-rolled SFT loop used it before the move onto TRL) and ``positions`` (what ``SFTTrainer``
trains with by default, ``logits: loss_positions``: the model's ``logits_to_keep`` with the
positions that predict an assistant token, through the wrapped model).
Peak memory is the process's peak RSS during the step (VmHWM after resetting it through
/proc/self/clear_refs once the model is loaded), minus the RSS just before the step: what the
step itself adds on top of the weights. Prints one JSON line per variant and the ratios to full.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def trajectory_messages(tokens: int) -> list[dict]:
    """A protocol conversation of the usual shape: long system prompt and tool responses
    (context), several assistant turns (loss). Enough rounds to pass ``tokens``; the encoder
    truncates to exactly ``tokens``."""
    from genevolve.protocol import default_system_prompt, format_answer, format_tool_call, format_tool_response

    corpus = sorted((REPO / "examples" / "corpus").rglob("*.md")) + sorted((REPO / "genevolve" / "tools" / "skills").rglob("*.md"))
    texts = [p.read_text(encoding="utf-8")[:1500] for p in corpus] or ["The Eiffel Tower is a wrought-iron lattice tower. " * 30]
    msgs = [{"role": "system", "content": default_system_prompt()},
            {"role": "user", "content": 'A 1990s travel-magazine cover of two backpackers in front of the Eiffel '
                                        'Tower, title "PARIS" in bold serif.'}]
    for i in range(12):
        msgs.append({"role": "assistant", "content": format_tool_call(
            "search", {"queries": [f"Eiffel Tower 1990s travel poster {i}", "bold serif magazine cover"]},
            think=f"Round {i + 1}: I still need facts about the tower's look at dusk, the magazine style of the "
                  "decade and how the two backpackers should stand; a search will settle this.")})
        msgs.append({"role": "user", "content": format_tool_response(texts[i % len(texts)][:900])})
    msgs.append({"role": "assistant", "content": format_answer(
        {"gen_prompt": 'A 1990s travel-magazine cover: two backpackers in front of the Eiffel Tower at dusk, '
                       'the title "PARIS" in bold serif across the top, warm film grain.', "reference_images": []},
        think="I have what I need.")})
    return msgs


VARIANTS = ("full", "fused", "selected", "positions")


def step_loss(variant: str, model, batch: dict):
    """Mean cross-entropy over the assistant tokens of ``batch``, computed the ``variant`` way."""
    import torch.nn.functional as F

    from genevolve.training.modeling import selected_logprobs

    inputs = {k: v for k, v in batch.items() if k not in ("labels", "loss_mask", "decision_mask")}
    if variant == "full":
        logits = model(**inputs, use_cache=False).logits.float()
        labels = batch["labels"][:, 1:]
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)
    if variant == "fused":
        return model(**inputs, labels=batch["labels"], use_cache=False, fused_lm_head=True).loss
    if variant == "positions":  # what SFTTrainer trains with by default (logits: loss_positions)
        from types import SimpleNamespace

        from genevolve.training.sft_trainer import GenevolveSFTTrainer

        fake = SimpleNamespace(args=SimpleNamespace(average_tokens_across_devices=False))
        return GenevolveSFTTrainer._loss_at_label_positions(fake, model, {**inputs, "labels": batch["labels"]})
    logp, _ = selected_logprobs(model, batch, batch["labels"] != -100)
    return -logp.mean()


def run_variant(variant: str, model_name: str, tokens: int, repeats: int, lora: bool, checkpointing: bool) -> dict:
    import torch
    from trl.trainer.utils import add_fused_lm_head

    from genevolve.training.data import ConversationEncoder
    from genevolve.training.modeling import ModelConfig, collate, load_for_training

    cfg = ModelConfig(name=model_name, dtype="float32", max_length=tokens, gradient_checkpointing=checkpointing,
                      lora={"r": 16, "alpha": 32} if lora else None)
    model, tok, proc = load_for_training(cfg)
    if variant == "fused":  # as SFTTrainer does
        add_fused_lm_head(model.get_base_model() if hasattr(model, "peft_config") else model)
    model.train()
    enc = ConversationEncoder(tok, proc, max_length=tokens).encode(trajectory_messages(tokens))
    batch = collate([enc], tok.pad_token_id)
    n_loss = sum(enc.loss_mask)
    times, peaks, losses = [], [], []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter
        before = _status_kib("VmRSS")
        t0 = time.perf_counter()
        loss = step_loss(variant, model, batch)
        loss.backward()
        times.append(time.perf_counter() - t0)
        peaks.append((_status_kib("VmHWM") - before) / 1024)
        losses.append(round(float(loss), 6))
        del loss
    return {"variant": variant, "model": model_name, "tokens": len(enc), "loss_tokens": n_loss,
            "vocab": model.config.get_text_config().vocab_size, "lora": lora, "gradient_checkpointing": checkpointing,
            "threads": torch.get_num_threads(), "loss": losses[0],
            "step_s": min(times), "step_s_all": [round(t, 3) for t in times],
            "peak_step_mib": min(peaks), "peak_step_mib_all": [round(p, 1) for p in peaks]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--variant", choices=VARIANTS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.model, args.tokens, args.repeats, args.lora,
                                     args.checkpointing)))
        return
    results = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", variant, "--model", args.model, "--tokens", str(args.tokens),
               "--repeats", str(args.repeats)] + (["--lora"] if args.lora else []) + \
              (["--checkpointing"] if args.checkpointing else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(results[variant]))
    full = results["full"]
    print(json.dumps({f"{v}_vs_full": {"memory_ratio": round(results[v]["peak_step_mib"] / full["peak_step_mib"], 3),
                                       "time_ratio": round(results[v]["step_s"] / full["step_s"], 3)}
                      for v in VARIANTS[1:]}))


if __name__ == "__main__":
    main()
