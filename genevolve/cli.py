"""The ``genevolve`` command.

Sub-commands owned by other parts of the library (render, verify, bench, train, data,
serve-renderer) are registered from their own ``commands`` modules, so each concern keeps its
command next to its code and this file stays a table of contents.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from genevolve.durable import json_text, write_atomic

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="GenEvolve: research a request, pick references, write a program, render it.")


@app.command()
def run(
    request: str = typer.Argument(..., help="What to draw, in words."),
    image: Optional[List[Path]] = typer.Option(None, "--image", help="A reference image of yours (repeatable)."),
    policy: Optional[str] = typer.Option(None, help="planner | nano | hf:<id>[?4bit=1&adapter=P] | openai:<model>@<url> | replay:<file>"),
    renderer: Optional[str] = typer.Option(None, help="layout | diffusers:<id> | service:<url> | gemini[:<model>] | none"),
    offline: Optional[bool] = typer.Option(None, "--offline/--online", help="No network at all (default: when the web is unreachable)."),
    out: Optional[Path] = typer.Option(None, help="Folder for program.json, trajectory.json, image.png."),
    as_json: bool = typer.Option(False, "--json", help="Print the trajectory summary and program as JSON."),
    typeset: bool = typer.Option(False, "--typeset", help="Set the exact text constraints onto a generative render."),
    seed: int = typer.Option(0, help="Renderer seed."),
    config: Optional[Path] = typer.Option(None, help="Settings file (YAML or JSON)."),
    system_prompt: Optional[Path] = typer.Option(None, "--system-prompt", help="Use this file as the policy's system prompt."),
    protocol: Optional[str] = typer.Option(None, help="Conversation profile: genevolve | nano | official:<path to the "
                                           "official release> (default: the policy's own, else genevolve)."),
):
    """Run the agent on REQUEST, render the program and verify the text."""
    from rich.console import Console

    from genevolve.agent import build_agent
    from genevolve.config import Settings
    from genevolve.store import Store

    console = Console(stderr=as_json)
    from genevolve.program import request_problem

    problem = request_problem(request, len(image or []))
    if problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    settings = Settings.load(config, policy=policy, renderer=renderer, offline=offline,
                             system_prompt_path=str(system_prompt) if system_prompt else None, protocol=protocol)
    is_offline = settings.resolved_offline()
    store = Store(settings.store_path)
    try:
        agent = build_agent(settings, store=store, offline=is_offline)
    except Exception as exc:  # noqa: BLE001 - a missing model or key is a one-line message
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    if not as_json:
        mode = "offline (local corpus, local image library, your images)" if is_offline else "online"
        console.print(f"[bold]GenEvolve[/bold] policy={settings.policy} renderer={settings.renderer} · {mode}")
        for name, backend in sorted(agent.backends.items()):
            if name.startswith("tool:"):
                console.print(f"  {name[5:]}: {backend}", style="dim")
    traj = None
    print_event = _EventPrinter(console)
    for event in agent.stream(request, [str(p) for p in image or []]):
        if not as_json:
            print_event(event)
        if event.type == "done":
            traj = event.trajectory
    result = {"summary": traj.summary(), "offline": is_offline, "image": None, "verification": None}
    if traj.program is not None and settings.renderer != "none":
        result.update(_render_and_verify(traj, settings, store, out, typeset, seed, console, quiet=as_json))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "trajectory.json", json_text(traj.to_dict(), indent=2))
        if traj.program is not None:
            write_atomic(out / "program.json", json_text(traj.program.model_dump(), indent=2))
    save_error = _save_error(store, traj)
    if as_json:
        typer.echo(json_text(result, indent=2))
    elif save_error is None:
        console.print(f"[bold]{traj.termination}[/bold] in {traj.elapsed_s:.2f}s · {len(traj.steps)} rounds · "
                      f"trajectory {traj.id} saved to {settings.store_path}")
    if save_error is not None:
        kept = f"it is in {out / 'trajectory.json'}" if out is not None else "rerun with --out DIR to keep it in a file"
        typer.echo(f"error: trajectory {traj.id} was NOT saved to {settings.store_path} ({save_error}); {kept}",
                   err=True)
        raise typer.Exit(2)
    raise typer.Exit(0 if traj.program is not None else 1)


def _save_error(store, traj) -> str | None:
    """Why the trajectory is not in the store, or None: read back, never assumed."""
    try:
        if store.get_run(traj.id) is not None:
            return None
    except Exception as exc:  # noqa: BLE001 - an unreadable store is itself the answer
        return f"{type(exc).__name__}: {exc}"
    failed = [w for w in traj.warnings if w.startswith("could not save")]
    return failed[-1] if failed else "no row with that id"


def _render_and_verify(traj, settings, store, out, typeset, seed, console, quiet) -> dict:
    try:
        from genevolve.judges.verify import verify_image
        from genevolve.renderers import make_renderer, render_with_report
    except ModuleNotFoundError as exc:  # renderers not installed in this build
        return {"render_error": str(exc)}
    try:
        renderer = make_renderer(settings.renderer)
        image, report = render_with_report(renderer, traj.program, seed=seed, typeset=typeset)
    except Exception as exc:  # noqa: BLE001
        if not quiet:
            console.print(f"[red]render failed:[/red] {exc}")
        return {"render_error": f"{type(exc).__name__}: {exc}"}
    out_dir = out or Path(settings.runs_dir) / traj.id
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "image.png"
    image.save(path)
    verification = verify_image(image, traj.program)
    store.attach_render(traj.id, str(path), report, verification)
    if not quiet:
        console.print(f"[green]image[/green] {path} ({report.get('backend')}, {report.get('width')}x{report.get('height')}, "
                      f"{report.get('elapsed_s', 0):.2f}s)")
        for item in verification.get("constraints", []):
            mark = "[green]found[/green]" if item.get("found") else "[red]missing[/red]"
            console.print(f"  text \"{item.get('text')}\": {mark}")
    from genevolve.judges.structure import verification_summary

    checked = verification_summary(verification, report, traj.program.constraints)
    if not quiet:
        console.print(f"  checked: {checked}", markup=False, highlight=False)
    return {"image": str(path), "render": report, "verification": verification, "checked": checked}


# The CLI's look for what genevolve.event_view says about each event: colours by kind or severity.
_CLI_STYLE = {"tool_call": "cyan", "tool_result": "yellow", "good": "bold green", "warn": "yellow", "bad": "red"}
_CLI_BODY_LINES = 6  # a tool reply is shown by its first lines; the trajectory keeps it whole


class _EventPrinter:
    """Agent events on the terminal: streamed text as it comes, everything else as its view says."""

    def __init__(self, console):
        self.console = console
        self.mid_line = False  # streamed text leaves the cursor mid-line

    def __call__(self, event) -> None:
        from genevolve.event_view import describe

        if event.type == "text_delta":  # the policy's words, printed the moment they stream
            self.console.print(event.text, end="", style="dim", markup=False, highlight=False)
            self.mid_line = not event.text.endswith("\n")
            return
        if event.type == "done":  # `run` closes with its own line (termination, time, where it was saved)
            return
        if self.mid_line:
            self.console.print()
            self.mid_line = False
        _print_view(self.console, describe(event))


def _print_view(console, view) -> None:
    from rich.text import Text

    if view.divider:
        console.rule(view.title, style="dim")
        return
    style = _CLI_STYLE.get(view.kind) or _CLI_STYLE.get(view.severity, "")
    head = Text(f"{view.icon} {view.title}".strip(), style=style)
    if view.meta:
        head.append(f" ({view.meta})")
    if view.error:
        head.append(f" {view.error}", style="red")
    if view.body_format == "json" and view.data is not None:
        head.append(" " + json.dumps(view.data, ensure_ascii=False))
    console.print(head)
    if view.body_format in ("text", "digest", "skill"):
        for line in view.body.strip().splitlines()[:_CLI_BODY_LINES]:
            console.print("   " + line, markup=False, highlight=False)
    if view.images:
        console.print("   images: " + ", ".join(f"{i.img_id} {i.title}" for i in view.images), markup=False,
                      highlight=False)
    for note in view.notes:
        console.print(f"   - {note}", markup=False, highlight=False)
    if view.body_format == "program" and view.data is not None:
        console.print_json(json.dumps(view.data, ensure_ascii=False))


@app.command()
def ui(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(7860), share: bool = False):
    """Start the Gradio studio."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from app.studio import launch

    launch(host=host, port=port, share=share)


# Sub-commands that live beside their code: (module, attribute, name, is_group).
_EXTERNAL = [
    ("genevolve.renderers.commands", "render", "render", False),
    ("genevolve.renderers.commands", "verify", "verify", False),
    ("genevolve.renderers.commands", "serve_renderer", "serve-renderer", False),
    ("genevolve.bench.commands", "bench_app", "bench", True),
    ("genevolve.bench.eval_commands", "eval_app", "eval", True),
    ("genevolve.training.commands", "train_app", "train", True),
    ("genevolve.data.commands", "data_app", "data", True),
    ("genevolve.official.commands", "import_cmd", "import", False),
]


def _register_external() -> None:
    for module, attr, name, is_group in _EXTERNAL:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # that part is not in this build
                continue
            raise
        obj = getattr(mod, attr)
        if is_group:
            app.add_typer(obj, name=name)
        else:
            app.command(name)(obj)


_register_external()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
