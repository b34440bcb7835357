"""SFT cold start: teach the policy the turn protocol from teacher trajectories.

Loss on assistant tokens only (think, tool_call, answer and the end-of-turn marker); system,
user and tool-response tokens are context. The trainer is TRL's ``SFTTrainer``
(``sft_trainer``); by default its loss computes logits only at the positions that predict an
assistant token (``logits_to_keep``), never the full (tokens x vocabulary) logits. Held-out loss is measured every ``eval_every`` steps (and at
the last) and the best checkpoint is marked ``checkpoints/best``. Processes, DDP, FSDP and
DeepSpeed come from accelerate, as for GRPO.
"""

from __future__ import annotations

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
    logits: str = option("loss_positions", "loss_positions (logits only where an assistant token is predicted) | "
                                           "fused (TRL's fused LM head: chunked, narrowed to the loss positions on "
                                           "Triton GPUs) | full (the plain-HF baseline the benchmark compares).")
    trl: dict = option(factory=dict, help="Further trl.SFTConfig fields, passed through (e.g. activation_offloading).")


def train_sft(cfg: SFTConfig, *, quiet: bool = False, probe=None) -> dict:
    """Run (or resume) SFT; returns ``{"state", "step", "best_eval_loss", "run_dir"}``.

    Any error marks ``status.json`` as failed (with the message) before it propagates.
    ``probe(model)``, when given, is called on every process with its trained model at the end
    (the multi-process tests compare the ranks' weights with it).
    """
    from genevolve.training.distributed import is_main_process
    from genevolve.training.metrics import RunFiles

    try:
        from genevolve.training.sft_trainer import run_sft

        return run_sft(cfg, quiet=quiet, probe=probe)
    except Exception as exc:
        if is_main_process():
            RunFiles(cfg.run_dir).status("failed", message=f"{type(exc).__name__}: {exc}"[:2000])
        raise
