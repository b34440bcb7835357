"""``genevolve train nano``: the GenEvolve-Nano recipe, end to end.

The command joins the ``train`` group (``genevolve.training.commands``) but lives here: the recipe
chains the data build, the trainers and the bench ablation, so it sits on a floor above all three.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from genevolve.nano.recipe import STAGES
from genevolve.training.commands import train_app


@train_app.command()
def nano(out: Path = typer.Option(Path("runs/nano"), help="Folder for every stage's output (resumable)."),
         stages: str = typer.Option(",".join(STAGES),
                                    help=f"Comma-separated stages to run, in order: {','.join(STAGES)}."),
         eval_requests: int = typer.Option(60, min=1, help="Held-out requests in the ablation (stratified)."),
         stage_requests: int = typer.Option(20, min=1, help="Of those, how many (stratified) the GRPO stages run; "
                                            "they are compared with the stage before on exactly these."),
         ship_to: Optional[Path] = typer.Option(None, help="Where the ship stage puts the adapter "
                                                "(default: assets/adapters/nano)."),
         systems: Optional[str] = typer.Option(None, help="Evaluate only these systems now (comma-separated: planner, "
                                               "untuned, sft, sft+grpo, sft+grpo+sdl, or a stage's name: grpo, "
                                               "grpo_sdl); the eval stage stays open."),
         rescore: bool = typer.Option(False, "--rescore", help="Eval: measure the stored rollouts again with "
                                      "today's judges and reward, then run what is missing."),
         summary_only: bool = typer.Option(False, "--summary-only", help="Eval: write the summary of the requests "
                                           "finished so far and run nothing."),
         fork_at: Optional[int] = typer.Option(None, min=1, help="Start plain GRPO from GRPO+SDL's checkpoint at "
                                               "this step (training that stage up to it first), so the two share "
                                               "their first steps and differ by SDL alone; at most the steps before "
                                               "a prompt's second visit (prompt_pool / prompts_per_step).")):
    """The GenEvolve-Nano recipe on the real Gemma 3 270M: data, SFT, GRPO, GRPO+SDL, ablation, ship.

    Every stage resumes after a kill: run the same command again.
    """
    from genevolve.nano.recipe import NanoRecipe

    try:
        ledger = NanoRecipe(out, log=lambda m: typer.echo(m, err=True), eval_requests=eval_requests,
                            ship_to=ship_to, eval_systems=systems.split(",") if systems else None,
                            rescore=rescore, summary_only=summary_only, stage_requests=stage_requests,
                            fork_at=fork_at).run([s.strip() for s in stages.split(",") if s.strip()])
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(ledger))
