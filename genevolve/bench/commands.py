"""``genevolve bench run`` and ``genevolve bench summary``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

bench_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="Run a benchmark (rollout -> render -> judge, resumable) and summarise it.")


@bench_app.command("run")
def run(
    bench: str = typer.Option("mini", help="mini | a .jsonl bench file | a WISE .json file | a .txt prompt list | a directory"),
    out: Path = typer.Option(..., help="Run folder (stage JSONL files and per-case artifacts)."),
    policy: str = typer.Option("planner", help="planner | nano | hf:<id> | openai:<model>@<url> | replay:<file>"),
    renderer: str = typer.Option("layout", help="layout | diffusers:<id> | service:<url> | gemini[:<model>]"),
    judge: str = typer.Option("local", help="local | kscore:<model>@<url> | wise:<model>@<url> | sufficiency[:<model>@<url>]"),
    parallel: int = typer.Option(2, min=1, help="Worker threads per stage (a local model policy always uses one)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N cases."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run: skip cases whose stage is done."),
    rpm: Optional[int] = typer.Option(None, min=1, help="Requests per minute for API judges (shared by all workers)."),
    seed: int = typer.Option(0, help="Base render seed (each case adds a hash of its id)."),
    size: Optional[str] = typer.Option(None, help="Render size WIDTHxHEIGHT (default: the renderer's own)."),
    offline: Optional[bool] = typer.Option(None, "--offline/--online", help="No network for tools (default: auto)."),
    config: Optional[Path] = typer.Option(None, help="Settings file (YAML or JSON)."),
    protocol: Optional[str] = typer.Option(None, help="Conversation profile: genevolve | nano | "
                                           "official:<path to the official release> (default: the policy's, else genevolve)."),
    summary: bool = typer.Option(True, "--summary/--no-summary", help="Write summary.json/csv and report.html at the end."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars with ETA."),
):
    """Run BENCH with the given backends into OUT."""
    from rich.console import Console

    from genevolve.bench.loaders import load_bench
    from genevolve.bench.runner import BenchConfig, BenchRunner, RunDirError

    from genevolve.errors import UserError

    console = Console(stderr=True)
    try:
        cases = load_bench(bench)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    except RecursionError:
        typer.echo(f"error: bench {bench} nests JSON too deeply; each case must be a flat JSON object", err=True)
        raise typer.Exit(2)
    if not cases:
        typer.echo(f"error: bench {bench} holds no cases; give a file with at least one case", err=True)
        raise typer.Exit(2)
    from genevolve.renderers.base import RenderError, parse_size

    try:
        render_size = parse_size(size)
    except RenderError as exc:
        typer.echo(f"error: --size: {exc}", err=True)
        raise typer.Exit(2)
    if protocol:
        from genevolve.profiles import ProfileError, get_profile

        try:
            get_profile(protocol)  # a missing official copy is reported before any case runs
        except ProfileError as exc:
            raise UserError(f"--protocol: {exc}") from None
    # Backends are built lazily per worker; a spec that cannot work is refused before any case runs.
    from genevolve.inputs import check_batch_inputs

    check_batch_inputs(policy=policy, policy_flag="--policy", renderer=renderer, judge=judge, config=config, out=out)
    cfg = BenchConfig(bench=bench, policy=policy, renderer=renderer, judge=judge, parallel=parallel, limit=limit,
                      rpm=rpm, seed=seed, size=render_size, offline=offline,
                      settings_path=str(config) if config else None, protocol=protocol)
    runner = BenchRunner(cases, out, cfg, resume=resume, progress=progress, log=lambda m: console.print(m, style="dim"))
    console.print(f"[bold]bench[/bold] {bench}: {len(runner.cases)} cases · policy={policy} renderer={renderer} "
                  f"judge={judge} · parallel {parallel}" + (" · resuming" if resume else ""))
    try:
        runner.run()
    except RunDirError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    except OSError as exc:
        from genevolve.errors import EnvironmentFault, is_disk_fault, os_error_line

        if not is_disk_fault(exc):
            raise
        raise EnvironmentFault(f"{os_error_line(exc)}; finished cases are kept: continue with the same "
                               f"command plus --resume") from exc
    if summary:
        from genevolve.bench.summary import write_summary

        s = write_summary(out)
        console.print(f"[green]done[/green]: {s['scored']} scored, {s['failed']} failed, {s['missing']} missing · "
                      f"overall {s['overall']} · overall (missing = 0) {s['overall_missing_zero']} · {out}/report.html")
        console.print(s.get("overall_note", ""), markup=False)


@bench_app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="A folder written by `genevolve bench run`."),
    format: str = typer.Option("official", "--format", help="official: the results layout the official "
                               "scripts/evaluate_images.py reads."),
    out: Optional[Path] = typer.Option(None, help="Where to write (default: RUN_DIR/official/results.json)."),
):
    """Export RUN_DIR for other tools: `--format official` writes a JSON array of result records with
    `output_path` and the bench row's fields, so the official evaluator runs on our outputs unchanged."""
    from genevolve.bench.official_export import export_bench_run
    from genevolve.official.records import RecordError

    if format != "official":
        typer.echo(f"error: unknown --format {format!r}; only `official` is supported", err=True)
        raise typer.Exit(2)
    try:
        target, counts = export_bench_run(run_dir, out)
    except RecordError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(f"wrote {target}: {counts['records']} records, {counts['with_image']} with an image, "
               f"{counts['without_program']} without a program")
    typer.echo(f"evaluate with: python scripts/evaluate_images.py --results {target}  (in the official checkout; "
               f"it writes results_eval.json and summary.* beside {target.name}, not into {run_dir})")


@bench_app.command("summary")
def summary_cmd(
    run_dir: Path = typer.Argument(..., help="A folder written by `genevolve bench run`."),
    html: bool = typer.Option(True, "--html/--no-html", help="Also write report.html."),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json to stdout."),
):
    """Write summary.json, summary.csv and report.html for RUN_DIR."""
    from genevolve.bench.summary import write_summary

    try:
        s = write_summary(run_dir, html=html)
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    if as_json:
        typer.echo(json.dumps(s, indent=2, ensure_ascii=False, default=str))
    else:
        typer.echo(f"{s['cases']} cases: {s['scored']} scored, {s['failed']} failed, {s['missing']} missing; "
                   f"overall {s['overall']}, overall (missing = 0) {s['overall_missing_zero']}")
        typer.echo(s.get("overall_note", ""))
        theirs = s.get("official_overall_avg")
        if theirs:  # the official evaluator's printed figure, beside ours
            typer.echo(f"official evaluator's Overall Avg: overall {theirs['overall']}, text accuracy "
                       f"{theirs['text_accuracy']} ({theirs['note']})")
        for cat, agg in s["by"].get("category", {}).items():
            typer.echo(f"  {cat:<26} n={agg['cases']:<3} overall={agg['overall']}")
        typer.echo(f"wrote {run_dir}/summary.json, summary.csv" + (", report.html" if html else ""))
