"""SFT on TRL's ``SFTTrainer``: our encoded conversations, held-out loss, best checkpoint, run folder.

Imported only by ``sft.train_sft`` (it pulls in torch, transformers and trl).

How SFT maps onto TRL
---------------------
``ConversationEncoder`` renders each record once (token ids, ``labels`` with -100 on every
non-assistant token, vision inputs); the dataset TRL sees holds only example indices, and the
collator (``modeling.collate``) pads the encoded examples, so TRL's own dataset preparation is
skipped (``skip_prepare_dataset``) and the loss is on assistant tokens only. The default loss
(``logits: loss_positions``) asks the model for logits only at the positions that predict an
assistant token (``logits_to_keep`` with a tensor of positions, through the wrapped model);
``fused`` is TRL's fused LM head (chunked over every position on a CPU, narrowed to the loss
positions on Triton GPUs); ``full`` is the plain-HF baseline the benchmark compares.

Processes come from accelerate as for GRPO (DDP on CPU/GPU, FSDP or DeepSpeed from an accelerate
config): the Trainer shards each global batch over the processes and counts the loss tokens
across all of them (``average_tokens_across_devices``), so a step with N processes equals a
one-process step over the same global batch.

Held-out loss (token-weighted, shared out over the processes) is measured every ``eval_every``
steps and at the last, inside the step's log call, so it lands in the same metrics row; a new
best forces a checkpoint there, which ``checkpoints/best`` then names and rotation keeps.
"""

from __future__ import annotations

import math
import time

import torch
import trl

from genevolve.training.sft import SFTConfig
from genevolve.training.trl_run import RunFolderTrainer


class EncodedCollator:
    """Pads encoded conversations (``data.Encoded``) named by dataset rows ``{"example": i}``."""

    def __init__(self, encoded: list, pad_id: int):
        self.encoded = encoded
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict:
        from genevolve.training.modeling import collate

        batch = collate([self.encoded[r["example"]] for r in rows], self.pad_id)
        for key in ("loss_mask", "decision_mask"):  # our masks, not model inputs
            batch.pop(key)
        return batch


class GenevolveSFTTrainer(RunFolderTrainer, trl.SFTTrainer):
    """TRL's SFTTrainer with our held-out loss, best checkpoint and metrics row."""

    def __init__(self, *args, cfg: SFTConfig, held: list, pad_id: int, **kwargs):
        self.cfg = cfg
        self.held = held
        self.pad_id = pad_id
        self._step_t0: float | None = None
        self._tokens_logged = 0
        self._extras: dict = {}
        super().__init__(*args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._step_t0 is None:  # the step's first micro-batch
            self._step_t0 = time.perf_counter()
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.cfg.logits == "full" and self.model.training:
            # The plain-HF baseline: the model's own loss over the full logits.
            from transformers import Trainer

            self._count_tokens(inputs)
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
        if self.cfg.logits == "loss_positions":
            if self.model.training:
                self._count_tokens(inputs)
            loss = self._loss_at_label_positions(model, inputs, num_items_in_batch)
            return (loss, None) if return_outputs else loss
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _count_tokens(self, inputs) -> None:
        """The tokens trained on, counted as TRL's own loss does (over all processes): our loss paths
        replace TRL's compute_loss, which is where TRL counts them."""
        count = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
        self._total_train_tokens += count // self._tp_size

    def _loss_at_label_positions(self, model, inputs, num_items_in_batch=None):
        """Cross-entropy on assistant tokens with logits computed only where some row of the batch
        predicts one (the model's documented ``logits_to_keep`` with a tensor of positions): the
        forward goes through the wrapped model, so DDP/FSDP hooks run as for any loss. On a CPU this
        keeps the old hand-rolled loop's memory and speed; TRL's fused head narrows to the loss
        positions on Triton devices only."""
        from trl.trainer.utils import selective_log_softmax

        labels = inputs["labels"]
        predicts = labels[:, 1:] != -100  # position t predicts token t+1
        keep = predicts.any(0).nonzero().squeeze(1)
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        out = model(**model_inputs, use_cache=False, logits_to_keep=keep)
        targets = labels[:, keep + 1]
        mask = targets != -100
        logp = selective_log_softmax(out.logits[mask].float(), targets[mask])
        count = num_items_in_batch if num_items_in_batch is not None else mask.sum()
        loss = -logp.sum() / count
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # The count is over every process and DDP averages the gradients: scale back up, as
            # Trainer.compute_loss does for a model that takes num_items_in_batch.
            loss = loss * self.accelerator.num_processes
        return loss

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs and "eval_loss" not in logs:  # a training step's row
            step, extras = self.state.global_step, {}
            elapsed = time.perf_counter() - self._step_t0 if self._step_t0 is not None else float("nan")
            self._step_t0 = None
            # TRL counts the step's tokens over all processes; the counter restarts with the process.
            tokens = self._total_train_tokens - self._tokens_logged
            self._tokens_logged = self._total_train_tokens
            extras.update(tokens=tokens, tokens_per_s=tokens / max(elapsed, 1e-9), step_s=elapsed)
            if self.held and (step % self.cfg.eval_every == 0 or step == self.state.max_steps):
                logs["eval_loss"] = loss = self.held_out_loss()
                best = self.state.best_metric
                if best is None or loss < best:
                    self.state.best_metric = loss
                    self.state.best_global_step = step
                    # Rotation keeps the best checkpoint; it is written at this step.
                    self.state.best_model_checkpoint = f"{self.args.output_dir}/checkpoint-{step}"
                    extras["best"] = True
                    self.control.should_save = True
            self._extras = extras
        super().log(logs, start_time)

    def run_folder_extras(self) -> dict:
        extras, self._extras = self._extras, {}
        return extras

    def held_out_loss(self) -> float:
        """Token-weighted mean loss over the held-out conversations, each process taking its share."""
        acc = self.accelerator
        mine = self.held[acc.process_index::acc.num_processes]
        collate = EncodedCollator(mine, self.pad_id)
        model = self.model
        was_training = model.training
        model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=acc.device)
        with torch.no_grad():
            for i in range(0, len(mine), self.cfg.batch_size):
                batch = self._prepare_inputs(collate([{"example": j} for j in range(i, min(i + self.cfg.batch_size,
                                                                                         len(mine)))]))
                if self.cfg.logits == "loss_positions":
                    from genevolve.training.modeling import selected_logprobs

                    logp, _ = selected_logprobs(model, batch, batch["labels"] != -100)
                    total[0] += float(-logp.double().sum())
                    total[1] += logp.numel()
                    continue
                out = model(**batch, use_cache=False, fused_lm_head=True)
                total[0] += float(-out.log_probs.double().sum())
                total[1] += float(out.label_mask.sum())
        model.train(was_training)
        total = acc.reduce(total, reduction="sum") if acc.num_processes > 1 else total
        return float(total[0] / total[1].clamp(min=1))


def _trl_args(cfg: SFTConfig, output_dir) -> trl.SFTConfig:
    from genevolve.training.trl_run import base_args

    args = base_args(cfg, output_dir)
    args.update(
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, eval_strategy="no",
        # A global batch is batch_size x processes whole examples: the last partial one of an epoch
        # is dropped, so N processes and one see the same batches.
        dataloader_drop_last=True,
        dataset_kwargs={"skip_prepare_dataset": True}, max_length=None, packing=False,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    args.update(cfg.trl)
    return trl.SFTConfig(**args)


def run_sft(cfg: SFTConfig, *, quiet: bool = False, probe=None) -> dict:
    import os
    import warnings

    from datasets import Dataset

    from genevolve.training.data import ConversationEncoder, load_sft_records, split_records
    from genevolve.training.modeling import load_for_training
    from genevolve.training.rng import seed_all
    from genevolve.training.stopping import GracefulStop
    from genevolve.training.trl_run import RunFolderCallback, attach, open_run_folder, train_to_end

    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    if cfg.logits not in ("loss_positions", "fused", "full"):
        raise ValueError(f"logits: {cfg.logits!r} is not loss_positions, fused or full")
    with GracefulStop() as stop:
        state, files, ckpt, step = open_run_folder(cfg, "sft")
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
        train = [e for e in (encoder.encode(r["messages"], r.get("images", [])) for r in train_records)
                 if any(e.loss_mask)]
        held = [e for e in (encoder.encode(r["messages"], r.get("images", [])) for r in eval_records)
                if any(e.loss_mask)]
        if not train:
            raise ValueError("no training record has an assistant turn to learn from")
        per_batch = cfg.batch_size * state.num_processes
        if len(train) < per_batch:
            raise ValueError(f"{len(train)} training conversation(s); a batch takes batch_size x processes = "
                             f"{per_batch}: add records or lower batch_size")
        state.wait_for_everyone()  # rank 0 has prepared the run folder
        seed_all(cfg.seed)
        callback = RunFolderCallback(files, cfg, stop)
        trainer = GenevolveSFTTrainer(
            model=model, args=_trl_args(cfg, files.checkpoints),
            data_collator=EncodedCollator(train, tokenizer.pad_token_id),
            train_dataset=Dataset.from_list([{"example": i} for i in range(len(train))]),
            # The tokenizer, as before the move: checkpoints carry it; our collator does the vision inputs
            # (a Qwen3-VL processor without torchvision has no video processor and cannot be saved).
            processing_class=tokenizer, callbacks=[callback],
            cfg=cfg, held=held, pad_id=tokenizer.pad_token_id)
        attach(trainer, callback, step)
        result = train_to_end(trainer, files, ckpt, cfg, "sft", quiet=quiet, probe=probe)
    best = trainer.state.best_metric
    result["best_eval_loss"] = None if best is None or math.isinf(best) else best
    if state.is_main_process:
        files.status(result["state"], step=result["step"], total_steps=cfg.max_steps,
                     best_eval_loss=result["best_eval_loss"])
    return result
