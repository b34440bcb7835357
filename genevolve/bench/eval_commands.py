"""``genevolve eval programs`` (program quality on a set, no renderer) and ``genevolve eval compare``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

eval_app = typer.Typer(add_completion=False, no_args_is_help=True,
                       help="Measure programs (no renderer) on evaluation sets written by others.")


@eval_app.command("programs")
def programs(
    set_: str = typer.Option(..., "--set", help="parti | geneval | t2i-compbench | official-examples | all | "
                             "wise:PATH | a bench file or folder"),
    out: Path = typer.Option(..., help="Run folder (rollout.jsonl, cases/<id>/, summary.json/md/png)."),
    policy: str = typer.Option("planner", help="planner | nano | hf:<id> | openai:<model>@<url> | replay:<file>"),
    limit: Optional[int] = typer.Option(None, min=1, help="A stratified sample of N requests across sets and categories."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run: skip requests already measured."),
    protocol: Optional[str] = typer.Option(None, help="Conversation profile (default: the policy's)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Run POLICY on SET and report program quality per set and category into OUT."""
    from rich.console import Console

    from genevolve.bench.eval_sets import load_eval_set
    from genevolve.bench.loaders import BenchFormatError
    from genevolve.bench.programs import run_program_eval
    from genevolve.bench.runner import RunDirError

    console = Console(stderr=True)
    try:
        cases = load_eval_set(set_)
        result = run_program_eval(cases, out, policy=policy, set_name=set_, limit=limit, resume=resume,
                                  protocol=protocol, progress=progress, log=lambda m: console.print(m))
    except (FileNotFoundError, BenchFormatError, RunDirError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    overall = result["summary"]["overall"]
    typer.echo(json.dumps({"out": str(out), "overall": overall}, indent=1))
    console.print(f"summary: {out / 'summary.md'}")


@eval_app.command("remeasure")
def remeasure_cmd(run: Path = typer.Argument(..., help="An eval programs run folder.")):
    """Measure RUN's stored trajectories again (no new rollouts) and rewrite its summary."""
    from genevolve.bench.programs import remeasure, summarise

    try:
        n = remeasure(run)
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    summarise(run)
    typer.echo(f"{n} requests measured again; summary: {run / 'summary.md'}")


@eval_app.command("compare")
def compare_cmd(
    run_a: Path = typer.Argument(..., help="An eval programs run folder (system A)."),
    run_b: Path = typer.Argument(..., help="Another run folder (system B), on overlapping requests."),
    out: Optional[Path] = typer.Option(None, help="Write comparison.json and comparison.md here."),
):
    """A against B on their shared requests: per metric, the paired bootstrap 95% interval of A − B."""
    from genevolve.bench.programs import compare, compare_markdown

    try:
        result = compare(run_a, run_b)
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    text = compare_markdown(result)
    if out:
        from genevolve.durable import write_atomic

        write_atomic(out / "comparison.json", json.dumps(result, indent=1))
        write_atomic(out / "comparison.md", text)
    typer.echo(text)
