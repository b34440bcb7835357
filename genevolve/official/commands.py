"""``genevolve import RESULTS.json`` — the official runtime's results into our store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def import_cmd(
    results: Path = typer.Argument(..., help="results.json written by the official scripts/run_agent.py "
                                   "(or scripts/generate_images.py, whose records also name the image)."),
    format: str = typer.Option("official", "--format", help="The file's layout; only `official` for now."),
    config: Optional[Path] = typer.Option(None, help="Settings file (YAML or JSON): which store to write."),
):
    """Import official result records as trajectories: they show in the Inspector, replay with
    ``--policy replay:RESULTS.json?id=<id>`` (recorded tool replies) and render with
    ``genevolve render RESULTS.json --record <id>``."""
    from genevolve.config import Settings
    from genevolve.official.records import RecordError, import_results
    from genevolve.store import Store

    if format != "official":
        typer.echo(f"error: unknown --format {format!r}; only `official` is supported", err=True)
        raise typer.Exit(2)
    settings = Settings.load(config)
    try:
        trajectories = import_results(results, Store(settings.store_path))
    except RecordError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    answered = sum(t.program is not None for t in trajectories)
    typer.echo(f"imported {len(trajectories)} records ({answered} with a program) into {settings.store_path}")
    for t in trajectories[:20]:
        rid = t.meta.get("record", {}).get("id")
        typer.echo(f"  {t.id}  id={rid}  {t.termination:<18} {t.request[:70]}")
