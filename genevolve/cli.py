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

from genevolve.durable import json_text, write_atomic
from genevolve.service import GenerateForm

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
    request: str = typer.Argument(..., help=GenerateForm.help("request")),
    image: Optional[List[Path]] = typer.Option(None, "--image", help=GenerateForm.help("uploads")),
    policy: Optional[str] = typer.Option(None, help=GenerateForm.help("policy")),
    renderer: Optional[str] = typer.Option(None, help=GenerateForm.help("renderer")),
    offline: Optional[bool] = typer.Option(None, "--offline/--online", help=GenerateForm.help("offline")),
    out: Optional[Path] = typer.Option(None, help="Folder for program.json, trajectory.json, image.png."),
    as_json: bool = typer.Option(False, "--json", help="Print the trajectory summary and program as JSON."),
    typeset: bool = typer.Option(False, "--typeset", help=GenerateForm.help("typeset")),
    seed: int = typer.Option(0, help=GenerateForm.help("seed")),
    config: Optional[Path] = typer.Option(None, help="Settings file (YAML or JSON)."),
    system_prompt: Optional[Path] = typer.Option(None, "--system-prompt", help="Use this file as the policy's system prompt."),
    protocol: Optional[str] = typer.Option(None, help=GenerateForm.help("protocol")),
):
    """Run the agent on REQUEST, render the program and verify the text."""
    from rich.console import Console

    from genevolve import service
    from genevolve.config import Settings
    from genevolve.errors import UserError
    from genevolve.inputs import check_output_dir
    from genevolve.store import Store

    console = Console(stderr=as_json)
    images = [str(p) for p in image or []]
    # Everything the user named is checked before any work starts (bad input: exit 2); the request
    # first, so an empty one is named even when a settings file is wrong too.
    service.check_request(GenerateForm(request=request, uploads=images))
    settings = Settings.load(config, policy=policy, renderer=renderer, offline=offline,
                             system_prompt_path=str(system_prompt) if system_prompt else None, protocol=protocol)
    if system_prompt is not None and not system_prompt.is_file():
        raise UserError(f"--system-prompt {system_prompt}: no such file; give a text file")
    # Unset options are the settings' (file, environment, defaults), so the form carries those.
    form = GenerateForm(request=request, uploads=images, policy=settings.policy, renderer=settings.renderer,
                        typeset=typeset, seed=seed, protocol=settings.protocol or "")
    service.check(form)
    if out is not None:
        check_output_dir(out)
    # Only now ask whether the web is reachable (it may take a DNS timeout): bad input fails fast.
    form = form.model_copy(update={"offline": settings.resolved_offline()})
    printer = _RunPrinter(console, settings, quiet=as_json)
    result = service.generate(form, settings=settings, store=Store(settings.store_path), on_event=printer,
                              image_dir=out)
    traj = result.trajectory
    printer.result(result)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "trajectory.json", json_text(traj.to_dict(), indent=2))
        if traj.program is not None:
            write_atomic(out / "program.json", json_text(traj.program.model_dump(), indent=2))
    if as_json:
        typer.echo(json_text(result.to_json(), indent=2))
    elif result.save_error is None:
        console.print(f"[bold]{traj.termination}[/bold] in {traj.elapsed_s:.2f}s · {len(traj.steps)} rounds · "
                      f"trajectory {traj.id} saved to {settings.store_path}")
    if result.save_error is not None:
        kept = f"it is in {out / 'trajectory.json'}" if out is not None else "rerun with --out DIR to keep it in a file"
        typer.echo(f"error: trajectory {traj.id} was NOT saved to {settings.store_path} ({result.save_error}); {kept}",
                   err=True)
        raise typer.Exit(1)  # the environment (a full disk, a read-only store), not the input
    if traj.program is None:  # say why in one line, not only the termination word
        reason = f": {' '.join(str(traj.reason).split())}" if traj.reason else ""
        typer.echo(f"error: no program ({traj.termination}){reason[:500]}", err=True)
        raise typer.Exit(1)
    raise typer.Exit(0)


class _RunPrinter:
    """What `run` shows on the terminal while the service works: the backends, the agent's events,
    then the image and its check (nothing but the final JSON under --json)."""

    def __init__(self, console, settings, quiet: bool):
        self.console, self.settings, self.quiet = console, settings, quiet
        self.events = _EventPrinter(console)

    def __call__(self, event) -> None:
        if self.quiet or event.type == "render_start":
            return
        if event.type == "agent_ready":
            mode = "offline (local corpus, local image library, your images)" if event.offline else "online"
            self.console.print(f"[bold]GenEvolve[/bold] policy={self.settings.policy} "
                               f"renderer={self.settings.renderer} · {mode}")
            for name, backend in sorted(event.backends.items()):
                if name.startswith("tool:"):
                    self.console.print(f"  {name[5:]}: {backend}", style="dim")
            return
        self.events(event)

    def result(self, result) -> None:
        if self.quiet:
            return
        console = self.console
        if result.render_failure is not None and not isinstance(result.render_failure, ModuleNotFoundError):
            console.print(f"[red]render failed:[/red] {result.render_failure}")
        if result.image_path is None:
            return
        report, verification = result.render or {}, result.verification or {}
        console.print(f"[green]image[/green] {result.image_path} ({report.get('backend')}, {report.get('width')}x"
                      f"{report.get('height')}, {report.get('elapsed_s', 0):.2f}s)")
        for item in verification.get("constraints", []):
            mark = "[green]found[/green]" if item.get("found") else "[red]missing[/red]"
            console.print(f"  text \"{item.get('text')}\": {mark}")
        console.print(f"  checked: {result.checked}", markup=False, highlight=False)


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

    if argv is None and sys.argv[1:2] == ["train"]:
        from genevolve.training.allocator import restart_tuned_for_training

        restart_tuned_for_training()  # training on CPU: keep freed memory for reuse (see that module)
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
