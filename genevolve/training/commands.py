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


def _run(kind: str, config: Path, run_dir: Optional[str], max_steps: Optional[int], fresh: bool) -> None:
    from genevolve.training.config import config_from_file

    overrides = {"run_dir": run_dir, "max_steps": max_steps}
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
         fresh: bool = typer.Option(False, "--fresh", help="Ignore checkpoints in run_dir (start over).")):
    """GRPO with the hybrid reward; SDL on top when the config enables it."""
    _run("grpo", config, run_dir, max_steps, fresh)


@train_app.command()
def nano(out: Path = typer.Option(Path("runs/nano"), help="Folder for every stage's output (resumable)."),
         stages: str = typer.Option(",".join(("data", "sft", "grpo", "grpo_sdl", "eval", "ship")),
                                    help="Comma-separated stages to run, in order: data,sft,grpo,grpo_sdl,eval,external,ship."),
         eval_requests: int = typer.Option(60, min=1, help="Held-out requests in the ablation (stratified)."),
         stage_requests: int = typer.Option(20, min=1, help="Of those, how many (stratified) the GRPO stages run; "
                                            "they are compared with the stage before on exactly these."),
         ship_to: Optional[Path] = typer.Option(None, help="Where the ship stage puts the adapter "
                                                "(default: assets/adapters/nano)."),
         systems: Optional[str] = typer.Option(None, help="Evaluate only these systems now (comma-separated: planner, "
                                               "untuned, sft, sft+grpo, sft+grpo+sdl); the eval stage stays open."),
         rescore: bool = typer.Option(False, "--rescore", help="Eval: measure the stored rollouts again with "
                                      "today's judges and reward, then run what is missing."),
         summary_only: bool = typer.Option(False, "--summary-only", help="Eval: write the summary of the requests "
                                           "finished so far and run nothing.")):
    """The GenEvolve-Nano recipe on the real Gemma 3 270M: data, SFT, GRPO, GRPO+SDL, ablation, ship.

    Every stage resumes after a kill: run the same command again.
    """
    from genevolve.training.nano import NanoRecipe

    try:
        ledger = NanoRecipe(out, log=lambda m: typer.echo(m, err=True), eval_requests=eval_requests,
                            ship_to=ship_to, eval_systems=systems.split(",") if systems else None,
                            rescore=rescore, summary_only=summary_only, stage_requests=stage_requests).run([s.strip() for s in stages.split(",") if s.strip()])
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(ledger))
