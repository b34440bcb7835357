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
from dataclasses import dataclass

from genevolve.training.config import TrainingConfig, option


@dataclass
class SFTConfig(TrainingConfig):
    run_dir: str = option("runs/sft", "Run folder: config.yaml, status.json, metrics.jsonl, checkpoints/.")
    lr: float = option(2e-5, "Peak learning rate (AdamW, betas 0.9/0.99).")
    train_data: str | list = option("", "SFT records: a .jsonl/.json file or a folder of them (or a list).")
    eval_data: str | list | None = option(None, "Held-out records; None: split eval_fraction off train_data.")
    eval_fraction: float = option(0.1, "Share of train_data held out when eval_data is None.")
    batch_size: int = option(1, "Conversations per micro-batch per process.")
    grad_accum: int = option(1, "Micro-batches per optimizer step (global batch = batch_size x grad_accum x processes).")
    eval_every: int = option(20, "Measure the held-out loss every this many steps (and at the last).")
    logits: str = option("loss_positions", "loss_positions | full (the plain-HF baseline the benchmark compares).")


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


def evaluate(model, encoded: list, pad_id: int, batch_size: int, dist=None) -> float:
    """Token-weighted mean loss over held-out conversations (shared out over the processes)."""
    import torch

    from genevolve.training.modeling import collate, selected_logprobs

    rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
    mine = encoded[rank::world]
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(mine), batch_size):
            batch = collate(mine[i:i + batch_size], pad_id)
            logp, _ = selected_logprobs(model, batch, batch["labels"] != -100)
            total += float(-logp.sum())
            count += logp.numel()
    model.train(was_training)
    if dist is not None:
        total, count = dist.sum([total, count])
    return total / max(count, 1)


def train_sft(cfg: SFTConfig, *, quiet: bool = False, probe=None) -> dict:
    """Run (or resume) SFT; returns ``{"state", "step", "best_eval_loss", "run_dir"}``.

    Any error marks ``status.json`` as failed (with the message) before it propagates.
    ``probe(model)``, when given, is called on every process with its trained model at the end
    (the multi-process tests compare the ranks' weights with it).
    """
    from genevolve.training.distributed import is_main_process
    from genevolve.training.metrics import RunFiles

    try:
        return _train_sft(cfg, quiet, probe)
    except Exception as exc:
        if is_main_process():
            RunFiles(cfg.run_dir).status("failed", message=f"{type(exc).__name__}: {exc}"[:2000])
        raise


def _train_sft(cfg: SFTConfig, quiet: bool, probe=None) -> dict:
    """The loop. With several processes rank 0 alone writes the run folder; each rank takes every
    world-th example of one stream, and the summed gradients make a step equal to a one-process
    step over the same global batch (``distributed.Distributed``)."""
    from genevolve.training.checkpoint import latest_checkpoint, load_checkpoint, mark_best, save_checkpoint
    from genevolve.training.config import config_to_dict
    from genevolve.training.distributed import Distributed
    from genevolve.training.optimizer import make_optimizer
    from genevolve.training.rng import seed_all
    from genevolve.training.stopping import GracefulStop
    from genevolve.training.data import ConversationEncoder, load_sft_records, split_records
    from genevolve.training.metrics import RunFiles, progress
    from genevolve.training.modeling import (collate, load_for_training, loss_token_count, sft_loss_sum,
                                             trainable_parameters)

    dist = Distributed()
    main = dist.is_main
    files = RunFiles(cfg.run_dir, create=main)
    if main:
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
    params = trainable_parameters(model)
    optimizer, scheduler = make_optimizer(params, cfg.lr, cfg.weight_decay, cfg.warmup_steps, cfg.max_steps)
    step, best = 0, math.inf
    ckpt = latest_checkpoint(files.checkpoints) if cfg.resume else None
    if ckpt is not None:  # every rank loads the same checkpoint
        state = load_checkpoint(ckpt, model, optimizer, scheduler, rank=dist.rank)
        step, best = state["step"], state["extra"].get("best_eval_loss", math.inf)
    if main:
        if ckpt is not None:
            files.truncate_metrics(step)
        else:
            files.start_clean()  # rows of an attempt killed before its first checkpoint
    dist.wait()
    model, optimizer, scheduler = dist.prepare(model, optimizer, scheduler)
    model.train()
    stream = _example_stream(len(train), cfg.seed, step * cfg.batch_size * cfg.grad_accum, dist.rank, dist.world)
    bar = progress(cfg.max_steps, step, "sft") if not quiet and main else None
    ran = 0
    state_name = "done"
    if main:
        files.status("running", step=step, total_steps=cfg.max_steps)
    with GracefulStop() as stop:
        while step < cfg.max_steps:
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_sum, tokens = 0.0, 0
            for _ in range(cfg.grad_accum):
                batch = collate([train[next(stream)] for _ in range(cfg.batch_size)], pad_id)
                # Divide by the loss tokens of the whole global micro-batch, so rank gradients add up.
                count, n_tokens = dist.sum([loss_token_count(batch), int(batch["attention_mask"].sum())])
                nll, _ = sft_loss_sum(model, batch, full_logits=cfg.logits == "full")
                loss = nll / max(count, 1)
                dist.backward(loss / cfg.grad_accum)
                loss_sum += float(loss.detach())
                tokens += int(n_tokens)
            dist.sync_gradients(params)
            grad_norm = dist.clip_grad_norm(model, params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            ran += 1
            elapsed = time.perf_counter() - t0
            loss_sum = dist.sum([loss_sum])[0]  # each rank holds its share of the global mean
            record = {"step": step, "loss": loss_sum / cfg.grad_accum, "lr": scheduler.get_last_lr()[0],
                      "grad_norm": float(grad_norm), "tokens": tokens, "tokens_per_s": tokens / max(elapsed, 1e-9),
                      "step_s": elapsed}
            save = step % cfg.save_every == 0 or step == cfg.max_steps
            if held and (step % cfg.eval_every == 0 or step == cfg.max_steps):
                record["eval_loss"] = evaluate(model, held, pad_id, cfg.batch_size, dist)
                if record["eval_loss"] < best:
                    best = record["eval_loss"]
                    record["best"] = True
                    save = True
            if main:
                files.log(record)
            # A SIGTERM may reach one rank only; all of them stop at the same step.
            interrupted = dist.any(stop.requested) or (cfg.stop_after is not None and ran >= cfg.stop_after)
            if save or interrupted:
                path = save_checkpoint(files.checkpoints, step, model, optimizer, scheduler,
                                       {"best_eval_loss": best}, tokenizer, keep=cfg.keep_checkpoints, dist=dist)
                if record.get("best") and main:
                    mark_best(files.checkpoints, path)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}")
            if main:
                files.status("running", step=step, total_steps=cfg.max_steps, loss=record["loss"])
            if interrupted:
                state_name = "stopped"
                break
    if bar is not None:
        bar.close()
    result = {"state": state_name, "step": step, "best_eval_loss": None if math.isinf(best) else best,
              "run_dir": str(files.dir)}
    if main:
        files.status(state_name, step=step, total_steps=cfg.max_steps, best_eval_loss=result["best_eval_loss"])
    if probe is not None:
        probe(dist.unwrap(model))
    dist.wait()
    return result
