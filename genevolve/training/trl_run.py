"""The run folder on top of a TRL trainer, shared by SFT (``sft_trainer``) and GRPO (``grpo_trainer``).

TRL writes its own checkpoints (``checkpoints/checkpoint-N``: weights or adapter at the top level,
optimizer.pt, scheduler.pt, rng_state*.pth per rank, trainer_state.json); on top of them rank 0
writes metrics.jsonl (one row per step, our names), status.json (with the world size) and
``checkpoints/latest`` once a checkpoint is complete on every rank. Resume passes that checkpoint
to ``Trainer.train`` on every rank (weights, optimizer, scheduler, per-rank RNG, data position)
and cuts the metrics back to its step; a run killed before its first checkpoint starts clean.
SIGTERM (``GracefulStop``) and ``stop_after`` end the run after the current step with a
checkpoint. Imported only by the trainer modules (it pulls in torch and transformers).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import TrainerCallback

# TRL's names -> the names metrics.jsonl has always used (the studio plots these).
RENAMED = {"learning_rate": "lr", "reward": "reward_mean", "kl": "kl_ref", "clip_ratio/region_mean": "clip_frac"}
DROPPED = ("epoch", "total_flos", "num_tokens")


class RunFolderTrainer:
    """Mixin for a TRL trainer that writes our run folder; put it before the TRL class.

    Seams the callback calls: ``run_folder_extras()`` (fields added to the step's row, computed on
    every rank) and ``progress_field`` (the row field the progress bar shows)."""

    progress_field = "loss"

    def run_folder_extras(self) -> dict:
        return {}


class RunFolderCallback(TrainerCallback):
    """metrics.jsonl, status.json and checkpoints/latest (rank 0), stops on SIGTERM / stop_after."""

    def __init__(self, files, cfg, stop):
        self.files = files
        self.cfg = cfg
        self.stop = stop
        self.trainer = None
        self.ran = 0
        self.state_name = "done"
        self.signalled = False  # stopped by SIGTERM/SIGINT, not by stop_after: a caller stops too
        self.bar = None

    def on_step_end(self, args, state, control, **kwargs):
        self.ran += 1
        cfg = self.cfg
        requested = torch.tensor([1.0 if self.stop.requested else 0.0], device=self.trainer.accelerator.device)
        requested = float(self.trainer.accelerator.reduce(requested, reduction="sum")) > 0  # every rank agrees
        interrupted = requested or (cfg.stop_after is not None and self.ran >= cfg.stop_after)
        if interrupted and state.global_step < state.max_steps:
            self.state_name = "stopped"
            self.signalled = requested
            control.should_training_stop = True
            control.should_save = True
        if state.global_step >= state.max_steps:
            control.should_save = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "train_runtime" in logs:  # the end-of-training summary is not a step
            return
        extras = self.trainer.run_folder_extras()  # may be collective: every rank calls it
        if not state.is_world_process_zero:
            return
        record = {"step": state.global_step}
        for k, v in logs.items():
            if k not in DROPPED:
                record[RENAMED.get(k, k)] = v
        record.update(extras)
        self.files.log(record)
        field = self.trainer.progress_field
        self.files.status("running", step=state.global_step, total_steps=state.max_steps,
                          **{field: record.get(field)})
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)
            value = record.get(field)
            if isinstance(value, float) and not math.isnan(value):
                self.bar.set_postfix({field: f"{value:.3f}"})

    def on_save(self, args, state, control, **kwargs):
        self.trainer.accelerator.wait_for_everyone()  # every rank's files (rng_state_N) are written
        if state.is_world_process_zero:
            name = f"checkpoint-{state.global_step}"
            if (Path(args.output_dir) / name).is_dir():
                self.files.mark_latest(name)
                if state.best_global_step == state.global_step:  # SFT: the lowest held-out loss so far
                    self.files.mark_best(name)


def base_args(cfg, output_dir: Path) -> dict:
    """The TRL/transformers arguments both trainers share: optimizer (AdamW, betas 0.9/0.99),
    warm-up then cosine to 10% of the peak rate, one log per step, our checkpoint cadence."""
    from genevolve.training.modeling import pick_dtype

    on_gpu = torch.cuda.is_available()
    return dict(
        output_dir=str(output_dir), max_steps=cfg.max_steps, learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps, max_grad_norm=cfg.max_grad_norm, adam_beta1=0.9, adam_beta2=0.99,
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1}, seed=cfg.seed,
        logging_steps=1, save_strategy="steps", save_steps=cfg.save_every, save_total_limit=cfg.keep_checkpoints,
        report_to="none", remove_unused_columns=False, use_cpu=not on_gpu,
        bf16=on_gpu and pick_dtype(cfg.model.dtype) == torch.bfloat16,
        disable_tqdm=True, dataloader_num_workers=0, save_only_model=False, log_level="warning",
        ddp_find_unused_parameters=False,
    )


def open_run_folder(cfg, trainer_name: str, extra_files: tuple = (), seed_folder=None):
    """Process group, run folder and the checkpoint to resume from:
    ``(process state, RunFiles, checkpoint or None, its step)``.

    ``seed_folder(files, write=...)``, when given, runs first on every rank (each checks, so a bad
    source fails on all of them rather than leaving the others at a barrier) and may put a
    checkpoint in the folder on rank 0 (a fork); every rank waits for it. Rank 0 then saves the
    config, cuts metrics.jsonl (and ``extra_files``) back to the checkpoint's step, or starts clean
    when there is none."""
    from genevolve.training.config import config_to_dict
    from genevolve.training.distributed import prepare_process_group
    from genevolve.training.metrics import RunFiles

    state = prepare_process_group()
    main = state.is_main_process
    files = RunFiles(cfg.run_dir, create=main)
    files.world_size = state.num_processes
    if main:
        files.hold()  # before a fork seeds the folder: one trainer per run folder
    if seed_folder is not None:
        seed_folder(files, write=main)
        state.wait_for_everyone()
    ckpt = files.latest_trl_checkpoint() if cfg.resume else None
    step = int(ckpt.name.split("-")[-1]) if ckpt is not None else 0
    if main:
        files.save_config({"trainer": trainer_name, **config_to_dict(cfg)})
        if ckpt is not None:
            files.truncate_metrics(step)
            for name in extra_files:
                files.truncate_jsonl(name, step)
        else:
            files.start_clean(list(extra_files))
        files.status("starting", step=step, total_steps=cfg.max_steps)
    return state, files, ckpt, step


def attach(trainer, callback, step: int) -> None:
    """Wire the run-folder callback to its trainer; drop transformers' console printers (our bar
    and metrics.jsonl say it once)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    callback.trainer = trainer
    trainer.folder_callback = callback
    trainer.resume_step = step
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)


def train_to_end(trainer, files, ckpt, cfg, desc: str, *, quiet: bool, probe=None) -> dict:
    """Run (or resume) ``trainer`` and mark the run folder: ``{"state", "step", "run_dir", "signalled"}``."""
    from genevolve.training.metrics import progress

    callback, main = trainer.folder_callback, trainer.accelerator.is_main_process
    if main and not quiet:
        callback.bar = progress(cfg.max_steps, trainer.resume_step, desc)
    if main:
        files.status("running", step=trainer.resume_step, total_steps=cfg.max_steps)
    if ckpt is not None and trainer.resume_step >= cfg.max_steps:
        # A run killed after its final save, or started again once done: nothing is left to train.
        # (Trainer.train would fast-forward into the last epoch and take one more update before its
        # max_steps check, step 6 of 5, when max_steps is not a whole number of epochs.)
        _finished_from(trainer, Path(ckpt), weights=probe is not None)
    else:
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
    if callback.bar is not None:
        callback.bar.close()
    final = trainer.state.global_step
    state_name = callback.state_name if final < cfg.max_steps else "done"
    if main:
        files.status(state_name, step=final, total_steps=cfg.max_steps)
    if probe is not None:
        probe(trainer.accelerator.unwrap_model(trainer.model))
    trainer.accelerator.wait_for_everyone()
    files.release()
    return {"state": state_name, "step": final, "run_dir": str(files.dir), "signalled": callback.signalled}


def _finished_from(trainer, ckpt: Path, *, weights: bool) -> None:
    """The trainer as a finished run left it: its state from ``ckpt`` and, when asked, its weights
    (the adapter, or the whole model)."""
    from safetensors.torch import load_file
    from transformers import TrainerState

    trainer.state = TrainerState.load_from_json(str(ckpt / "trainer_state.json"))
    if not weights:
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    if (ckpt / "adapter_model.safetensors").is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
    else:
        model.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=False)

