"""``genevolve data build``: teacher trajectories -> filtered, rendered SFT records."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

data_app = typer.Typer(add_completion=False, no_args_is_help=True,
                       help="Build SFT training data from teacher trajectories (recipes -> filters -> GT -> splits).")


@data_app.command("build")
def build(
    out: Path = typer.Option(..., help="Output folder: train.jsonl, val.jsonl, images/, gt/, manifest.json, stages/."),
    recipes: int = typer.Option(64, min=1, help="How many requests to generate."),
    teacher: str = typer.Option("planner", help="Teacher policy: planner | nano | hf:<id> | openai:<model>@<url> | replay:<file>"),
    renderer: str = typer.Option("layout", help="GT renderer: layout | diffusers:<id> | service:<url> | gemini[:<model>]"),
    seed: int = typer.Option(0, help="Seed for recipes, render seeds and the train/val split."),
    parallel: int = typer.Option(2, min=1, help="Worker threads (a local model or replay teacher always uses one)."),
    val_fraction: float = typer.Option(0.1, min=0.0, max=0.9, help="Share of kept records held out in val.jsonl."),
    min_sufficiency: float = typer.Option(0.75, min=0.0, max=1.0, help="Drop trajectories whose program sufficiency is lower."),
    judge: str = typer.Option("sufficiency", help="Sufficiency judge: sufficiency | sufficiency:<model>@<url>"),
    size: Optional[str] = typer.Option(None, help="GT render size WIDTHxHEIGHT (default: the renderer's own)."),
    avoid: Optional[list[Path]] = typer.Option(None, help="A bench file (JSONL/JSON) whose questions the requests must "
                                               "not copy or paraphrase; repeatable. The mini bench is always avoided."),
    protocol: Optional[str] = typer.Option(None, help="Conversation profile of the records: genevolve | nano "
                                           "(compact, for the 270M nano policy) | official:<path to the official "
                                           "release>. Default: genevolve."),
    budget_fraction: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of sft recipes run with only "
                                          "--budget-rounds rounds, so the records show the final-round message obeyed."),
    budget_rounds: int = typer.Option(3, min=1, help="Round cap of a budgeted recipe."),
    held_out: bool = typer.Option(False, "--held-out/--no-held-out", help="Also write rl_prompts.jsonl and "
                                  "eval.jsonl: splits disjoint from the SFT records by request and named entity."),
    variety: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of recipes with human variety instead of "
                                  "the templates: long paragraphs (DPG-Bench), other quote styles and wordings, "
                                  "merged constraints, invented subjects, plain scenes."),
    rl_pictures: int = typer.Option(0, min=0, help="RL prompts about a picture (given, or a library subject "
                                    "named) added after the recipes: GRPO on a pool that rarely asks for one "
                                    "unlearns binding it. Needs --held-out."),
    sft_pictures: int = typer.Option(0, min=0, help="SFT recipes that name a library subject with no picture "
                                     "given, added after those: the teacher finds the picture and binds it, which "
                                     "the templates show a student too rarely to learn."),
    sft_near_misses: int = typer.Option(0, min=0, help="SFT recipes that ask a library subject in a colour its "
                                        "picture contradicts, added after those: the teacher sees the picture "
                                        "come back and binds none."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted build in OUT with the same options."),
    offline: Optional[bool] = typer.Option(None, "--offline/--online", help="No network for tools (default: auto)."),
    config: Optional[Path] = typer.Option(None, help="Settings file (YAML or JSON): corpus, library, limits, extra."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Generate requests, run the teacher, filter, render ground truth and write train/val SFT records."""
    from rich.console import Console

    from genevolve.data.pipeline import BuildConfig, BuildSetupError, DatasetBuilder

    console = Console(stderr=True)
    from genevolve.renderers.base import RenderError, parse_size

    from genevolve.errors import UserError
    from genevolve.inputs import check_batch_inputs

    if rl_pictures and not held_out:
        raise UserError("--rl-pictures adds RL prompts: it needs --held-out (which writes rl_prompts.jsonl)")
    try:
        render_size = parse_size(size)
    except RenderError as exc:
        raise UserError(f"--size: {exc}") from None
    # Every named backend and file is checked before the first recipe runs.
    check_batch_inputs(policy=teacher, policy_flag="--teacher", renderer=renderer, judge=judge, config=config,
                       out=out)
    cfg = BuildConfig(recipes=recipes, teacher=teacher, renderer=renderer, seed=seed, parallel=parallel,
                      val_fraction=val_fraction, min_sufficiency=min_sufficiency, judge=judge, size=render_size,
                      offline=offline, settings_path=str(config) if config else None,
                      avoid=[str(p) for p in avoid or []], protocol=protocol,
                      budget_fraction=budget_fraction, budget_rounds=budget_rounds, held_out=held_out,
                      variety=variety, rl_pictures=rl_pictures, sft_pictures=sft_pictures,
                      sft_near_misses=sft_near_misses)
    console.print(f"[bold]data build[/bold] {recipes} recipes · teacher={teacher} renderer={renderer} seed={seed}"
                  + (" · resuming" if resume else ""))
    builder = DatasetBuilder(out, cfg, resume=resume, progress=progress,
                             log=lambda m: console.print(m, style="dim"))
    try:
        manifest = builder.run()
    except BuildSetupError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        from genevolve.errors import EnvironmentFault, is_disk_fault, os_error_line

        if not is_disk_fault(exc):
            raise
        raise EnvironmentFault(f"{os_error_line(exc)}; finished stages are kept: continue with the same "
                               f"command plus --resume") from exc
    c = manifest["counts"]
    console.print(f"[green]done[/green]: {c['recipes']} recipes → {c['answered']} answered → "
                  f"{c['filter_passed']} passed filters → {c['kept']} kept ({c['train']} train / {c['val']} val)")
    if manifest["rejections_first"]:
        console.print("rejected: " + ", ".join(f"{k} {v}" for k, v in manifest["rejections_first"].items()))
    console.print(f"wrote {out}/train.jsonl, {out}/val.jsonl, {out}/manifest.json")
