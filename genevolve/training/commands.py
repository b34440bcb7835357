"""``genevolve train sft|grpo --config FILE``: run a trainer in the foreground.

The studio starts the same commands as background subprocesses and stops them with SIGTERM;
the trainer checkpoints and exits 0, and ``--config`` with the same ``run_dir`` resumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

train_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="Train the policy: SFT cold start, then GRPO (+SDL).")


def _run(kind: str, config: Path, run_dir: Optional[str], max_steps: Optional[int], fresh: bool,
         **more) -> None:
    from genevolve.training.config import config_from_file

    overrides = {"run_dir": run_dir, "max_steps": max_steps, **more}
    if fresh:
        overrides["resume"] = False
    try:
        if kind == "sft":
            from genevolve.training.sft import SFTConfig, train_sft

            result = train_sft(config_from_file(SFTConfig, config, **overrides))
        else:
            from genevolve.training.grpo import GRPOConfig, train_grpo

            result = train_grpo(config_from_file(GRPOConfig, config, **overrides))
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    from genevolve.training.distributed import is_main_process

    if is_main_process():  # one line from a multi-process launch, as from one process
        typer.echo(json.dumps(result))


@train_app.command()
def sft(config: Path = typer.Option(..., "--config", help="SFT config (YAML), e.g. configs/sft_tiny_cpu.yaml"),
        run_dir: Optional[str] = typer.Option(None, help="Override run_dir from the config."),
        max_steps: Optional[int] = typer.Option(None, help="Override max_steps."),
        fresh: bool = typer.Option(False, "--fresh", help="Ignore checkpoints in run_dir (start over).")):
    """Supervised fine-tuning on SFT records (loss on assistant tokens only)."""
    _run("sft", config, run_dir, max_steps, fresh)


@train_app.command()
def grpo(config: Path = typer.Option(..., "--config", help="GRPO config (YAML), e.g. configs/grpo_tiny_cpu.yaml"),
         run_dir: Optional[str] = typer.Option(None, help="Override run_dir from the config."),
         max_steps: Optional[int] = typer.Option(None, help="Override max_steps."),
         fresh: bool = typer.Option(False, "--fresh", help="Ignore checkpoints in run_dir (start over)."),
         fork_from: Optional[str] = typer.Option(None, help="Start from another run's checkpoint-N folder, sharing "
                                                            "its steps 1-N (an SDL run takes its guides too)."),
         sdl: Optional[bool] = typer.Option(None, "--sdl/--no-sdl", help="Override sdl.enabled."),
         guide_store: Optional[str] = typer.Option(None, help="Override sdl.store_path (the SQLite file of "
                                                              "Decision Guides).")):
    """GRPO with the hybrid reward; SDL on top when the config enables it.

    Both arms of a pair from one checkpoint, from the source run's own config.yaml:
    ``--config A/config.yaml --run-dir B/grpo_sdl --fork-from A/checkpoints/checkpoint-20``, then
    the same with ``--run-dir B/grpo --no-sdl``."""
    section = {k: v for k, v in (("enabled", sdl), ("store_path", guide_store)) if v is not None}
    _run("grpo", config, run_dir, max_steps, fresh, fork_from=fork_from, sdl=section or None)
