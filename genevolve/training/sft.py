"""SFT cold start: teach the policy the turn protocol from teacher trajectories.

Loss on assistant tokens only (think, tool_call, answer and the end-of-turn marker); system,
user and tool-response tokens are context. Logits are computed only at those positions
(``modeling.selected_logprobs``). Held-out loss is measured every ``eval_every`` steps and
the best checkpoint is marked ``checkpoints/best``.

What we take from TRL: its padding collator (``DataCollatorForLanguageModeling``) and its
memory-lean ``selective_log_softmax``. Its ``SFTTrainer`` is not used: assistant-only loss there
needs ``{% generation %}`` markers in the chat template (the released templates have none),
it computes full logits, and our run-dir/resume contract is shared with the GRPO trainer.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from genevolve.training.modeling import ModelConfig


@dataclass
class SFTConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train_data: str | list = ""  # SFT records: a .jsonl/.json file or a folder of them
    eval_data: str | list | None = None  # held-out records; None -> split eval_fraction off train
    eval_fraction: float = 0.1
    run_dir: str = "runs/sft"
    seed: int = 0
    max_steps: int = 100
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    eval_every: int = 20
    save_every: int = 50
    keep_checkpoints: int = 3
    logits: str = "loss_positions"  # loss_positions | full (the baseline the benchmark compares)
    resume: bool = True
    stop_after: int | None = None  # stop (checkpointed, resumable) after this many steps in this process


def _example_stream(n: int, seed: int, start: int, rank: int = 0, world: int = 1):
    """Example indices from global position ``start``: epochs reshuffled by (seed, epoch).

    With several processes, process ``rank`` takes every ``world``-th example of the one stream.
    """
    from genevolve.training.data import epoch_order

    i = start * world + rank
    orders: dict[int, list[int]] = {}
    while True:
        epoch, k = divmod(i, n)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = epoch_order(n, seed, epoch)
        yield orders[epoch][k]
        i += world


def evaluate(model, encoded: list, pad_id: int, batch_size: int) -> float:
    """Token-weighted mean loss over held-out conversations."""
    import torch

    from genevolve.training.modeling import collate, selected_logprobs

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(encoded), batch_size):
            batch = collate(encoded[i:i + batch_size], pad_id)
            logp, _ = selected_logprobs(model, batch, batch["labels"] != -100)
            total += float(-logp.sum())
            count += logp.numel()
    model.train(was_training)
    return total / max(count, 1)


def train_sft(cfg: SFTConfig, *, quiet: bool = False) -> dict:
    """Run (or resume) SFT; returns ``{"state", "step", "best_eval_loss", "run_dir"}``.

    Any error marks ``status.json`` as failed (with the message) before it propagates.
    """
    from genevolve.training.metrics import RunFiles

    try:
        return _train_sft(cfg, quiet)
    except Exception as exc:
        RunFiles(cfg.run_dir).status("failed", message=f"{type(exc).__name__}: {exc}"[:2000])
        raise


def _train_sft(cfg: SFTConfig, quiet: bool) -> dict:

    from genevolve.training.checkpoint import latest_checkpoint, load_checkpoint, mark_best, save_checkpoint
    from genevolve.training.common import Distributed, GracefulStop, config_to_dict, make_optimizer, seed_all
    from genevolve.training.data import ConversationEncoder, load_sft_records, split_records
    from genevolve.training.metrics import RunFiles, progress
    from genevolve.training.modeling import collate, load_for_training, sft_loss, trainable_parameters

    dist = Distributed()
    files = RunFiles(cfg.run_dir)
    if dist.is_main:
        files.save_config({"trainer": "sft", **config_to_dict(cfg)})
        files.status("starting", step=0, total_steps=cfg.max_steps)
    seed_all(cfg.seed)
    if not cfg.train_data:
        raise ValueError("train_data is empty: point it at SFT records (JSONL of {messages, images})")
    records = load_sft_records(cfg.train_data)
    if cfg.eval_data:
        train_records, eval_records = records, load_sft_records(cfg.eval_data)
    else:
        train_records, eval_records = split_records(records, cfg.eval_fraction, cfg.seed)
    model, tokenizer, processor = load_for_training(cfg.model)
    encoder = ConversationEncoder(tokenizer, processor, max_length=cfg.model.max_length)
    train = [e for e in (encoder.encode(r["messages"], r.get("images", [])) for r in train_records) if any(e.loss_mask)]
    held = [e for e in (encoder.encode(r["messages"], r.get("images", [])) for r in eval_records) if any(e.loss_mask)]
    if not train:
        raise ValueError("no training record has an assistant turn to learn from")
    pad_id = tokenizer.pad_token_id
    optimizer, scheduler = make_optimizer(trainable_parameters(model), cfg.lr, cfg.weight_decay,
                                          cfg.warmup_steps, cfg.max_steps)
    step, best = 0, math.inf
    ckpt = latest_checkpoint(files.checkpoints) if cfg.resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer, scheduler)
        step, best = state["step"], state["extra"].get("best_eval_loss", math.inf)
        if dist.is_main:
            files.truncate_metrics(step)
    model, optimizer, scheduler = dist.prepare(model, optimizer, scheduler)
    model.train()
    stream = _example_stream(len(train), cfg.seed, step * cfg.batch_size * cfg.grad_accum, dist.rank, dist.world)
    bar = progress(cfg.max_steps, step, "sft") if not quiet else None
    ran = 0
    state_name = "done"
    files.status("running", step=step, total_steps=cfg.max_steps)
    with GracefulStop() as stop:
        while step < cfg.max_steps:
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_sum, tokens = 0.0, 0
            for _ in range(cfg.grad_accum):
                batch = collate([train[next(stream)] for _ in range(cfg.batch_size)], pad_id)
                loss = sft_loss(model, batch, full_logits=cfg.logits == "full")
                dist.backward(loss / cfg.grad_accum)
                loss_sum += float(loss.detach())
                tokens += int(batch["attention_mask"].sum())
            grad_norm = dist.clip_grad_norm(model, trainable_parameters(model), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            ran += 1
            elapsed = time.perf_counter() - t0
            record = {"step": step, "loss": loss_sum / cfg.grad_accum, "lr": scheduler.get_last_lr()[0],
                      "grad_norm": float(grad_norm), "tokens": tokens, "tokens_per_s": tokens / max(elapsed, 1e-9),
                      "step_s": elapsed}
            save = step % cfg.save_every == 0 or step == cfg.max_steps
            if held and (step % cfg.eval_every == 0 or step == cfg.max_steps):
                record["eval_loss"] = evaluate(model, held, pad_id, cfg.batch_size)
                if record["eval_loss"] < best:
                    best = record["eval_loss"]
                    record["best"] = True
                    save = True
            if dist.is_main:
                files.log(record)
            interrupted = stop.requested or (cfg.stop_after is not None and ran >= cfg.stop_after)
            if save or interrupted:
                path = save_checkpoint(files.checkpoints, step, model, optimizer, scheduler,
                                       {"best_eval_loss": best}, tokenizer, keep=cfg.keep_checkpoints, dist=dist)
                if record.get("best") and dist.is_main:
                    mark_best(files.checkpoints, path)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}")
            if dist.is_main:
                files.status("running", step=step, total_steps=cfg.max_steps, loss=record["loss"])
            if interrupted:
                state_name = "stopped"
                break
    if bar is not None:
        bar.close()
    result = {"state": state_name, "step": step, "best_eval_loss": None if math.isinf(best) else best,
              "run_dir": str(files.dir)}
    if dist.is_main:
        files.status(state_name, step=step, total_steps=cfg.max_steps, best_eval_loss=result["best_eval_loss"])
    return result
