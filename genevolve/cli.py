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
import typer.core

from genevolve.durable import json_text, save_image_atomic, write_atomic

class _OneErrorLine(typer.core.TyperGroup):
    """The one error path, around every sub-command: a failure is one ``error:`` line and exit 2
    (bad input) or 1 (environment), also for callers of ``app`` other than ``main`` (tests'
    CliRunner, scripts). Usage errors pass through to the parser's own handling."""

    def invoke(self, ctx):
        from genevolve.errors import explain
        from genevolve.specs import env_flag

        try:
            return super().invoke(ctx)
        except Exception as exc:  # noqa: BLE001 - the one error path; --debug shows the traceback
            if isinstance(exc, (typer.Exit, typer.Abort)) or hasattr(exc, "format_message"):
                raise
            if _DEBUG["on"] or env_flag("GENEVOLVE_DEBUG"):
                raise
            code, line = explain(exc)
            typer.echo(f"error: {line}", err=True)
            raise typer.Exit(code) from None


app = typer.Typer(cls=_OneErrorLine, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="GenEvolve: research a request, pick references, write a program, render it.")

_DEBUG = {"on": False}  # --debug: show tracebacks instead of the one-line answer


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show the full traceback of a failure.")):
    """GenEvolve: research a request, pick references, write a program, render it."""
    _DEBUG["on"] = debug


@app.command()
def run(
    request: str = typer.Argument(..., help="What to draw, in words."),
    image: Optional[List[Path]] = typer.Option(None, "--image", help="A reference image of yours (repeatable). Under --protocol official the "
                                              "request is sent as the official runtime sends it (it takes no user "
                                              "images): yours reach the model only as image_search results."),
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

    from genevolve.errors import UserError
    from genevolve.inputs import check_output_dir, check_reference_image, check_renderer_spec

    # Everything the user named is checked before any work starts (bad input: exit 2).
    problem = request_problem(request, len(image or []))
    if problem:
        raise UserError(problem)
    settings = Settings.load(config, policy=policy, renderer=renderer, offline=offline,
                             system_prompt_path=str(system_prompt) if system_prompt else None, protocol=protocol)
    for path in image or []:
        check_reference_image(path)
    if system_prompt is not None and not system_prompt.is_file():
        raise UserError(f"--system-prompt {system_prompt}: no such file; give a text file")
    if settings.renderer != "none":
        check_renderer_spec(settings.renderer)
    if out is not None:
        check_output_dir(out)
    is_offline = settings.resolved_offline()
    store = Store(settings.store_path)
    try:
        agent = build_agent(settings, store=store, offline=is_offline)
    except Exception as exc:  # noqa: BLE001 - a missing model or key is a one-line message
        raise UserError(str(exc)) from exc
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
        raise typer.Exit(1)  # the environment (a full disk, a read-only store), not the input
    if traj.program is None:  # say why in one line, not only the termination word
        reason = f": {' '.join(str(traj.reason).split())}" if traj.reason else ""
        typer.echo(f"error: no program ({traj.termination}){reason[:500]}", err=True)
        raise typer.Exit(1)
    raise typer.Exit(0)


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
    save_image_atomic(image, path)  # a full disk leaves no half-written image.png behind
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
    # the train group with the nano recipe's command added (the recipe sits above training)
    ("genevolve.nano.commands", "train_app", "train", True),
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


def main(argv: list[str] | None = None) -> None:
    """The ``genevolve`` command: every failure ends as one ``error:`` line and exit 2 (bad input)
    or 1 (environment); ``--debug`` or GENEVOLVE_DEBUG=1 shows the traceback instead."""
    from genevolve.errors import explain
    from genevolve.specs import env_flag

    try:
        code = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:  # raised outside the command parser's own handling
        code = exc.exit_code
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        code = 130
    except Exception as exc:  # noqa: BLE001 - the one error path; --debug shows the traceback
        if hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int):
            # A usage error (bad option value, missing argument): click's own message, on one line.
            typer.echo(f"error: {' '.join(exc.format_message().split())} (see --help)", err=True)
            code = exc.exit_code
        elif _DEBUG["on"] or env_flag("GENEVOLVE_DEBUG"):
            raise
        else:
            code, line = explain(exc)
            typer.echo(f"error: {line}", err=True)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
