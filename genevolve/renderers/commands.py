"""``genevolve render``, ``genevolve verify`` and ``genevolve serve-renderer``.

genevolve/cli.py registers these functions as sub-commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def load_program_file(path: Path):
    """Read program.json (ours or the official answer JSON); resolve relative reference paths.

    A program without ``constraints`` gets them derived from its prompt (quoted strings etc.),
    so an official answer file can be rendered and verified as it is.
    """
    from genevolve.program import Program, ProgramError, derive_constraints

    if not path.is_file():
        raise typer.BadParameter(f"program file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise typer.BadParameter(f"{path} is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("program"), dict):  # a `run --json` result
        data = data["program"]
    try:
        program = Program.from_answer(data)
    except ProgramError as exc:
        raise typer.BadParameter(f"{path}: {exc}") from exc
    refs = []
    raw_refs = data.get("reference_images") or []
    for ref, raw in zip(program.reference_images, raw_refs):
        ref_path = raw.get("path") if isinstance(raw, dict) else None
        if ref_path and not Path(ref_path).is_absolute():
            ref_path = str((path.parent / ref_path).resolve())
        refs.append(ref.model_copy(update={"path": ref_path}))
    update = {"reference_images": refs}
    if "constraints" not in data:
        update["constraints"] = derive_constraints(program.gen_prompt, program)
    return program.model_copy(update=update)


def render(
    program: Path = typer.Argument(..., help="program.json (from `genevolve run --out`) or an answer JSON."),
    renderer: str = typer.Option("layout", "--renderer", help="layout | diffusers:<id> | service:<url>[,<url>] | gemini[:<model>]"),
    out: Path = typer.Option(..., "--out", help="Where to write the image (PNG/JPEG by extension)."),
    typeset: bool = typer.Option(False, "--typeset", help="Set the exact text constraints onto a generative render."),
    size: Optional[str] = typer.Option(None, "--size", help="WIDTHxHEIGHT, e.g. 1024x768 (default: from the program)."),
    seed: int = typer.Option(0, "--seed", help="Renderer seed."),
    report: bool = typer.Option(False, "--json", help="Print the render report as JSON."),
):
    """Render PROGRAM.json to an image."""
    from genevolve.renderers import make_renderer, render_with_report
    from genevolve.renderers.base import RenderError, parse_size

    prog = load_program_file(program)
    try:
        backend = make_renderer(renderer)
        image, info = render_with_report(backend, prog, size=parse_size(size), seed=seed, typeset=typeset)
    except RenderError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    info["image"] = str(out)
    if report:
        typer.echo(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        typer.echo(f"{out} ({info['backend']}, {info['width']}x{info['height']}, {info['elapsed_s']:.2f}s"
                   + (", typeset" if info.get("typeset") else "") + ")")
        for w in info.get("warnings", []):
            typer.echo(f"warning: {w}", err=True)


def verify(
    image: Path = typer.Argument(..., help="The image to check."),
    program: Path = typer.Option(..., "--program", help="The program whose text constraints must appear."),
):
    """OCR IMAGE and check the program's text constraints; print JSON."""
    from genevolve.judges.verify import verify_image

    if not image.is_file():
        raise typer.BadParameter(f"image not found: {image}")
    from genevolve.judges.structure import verification_summary

    prog = load_program_file(program)
    result = verify_image(image, prog)
    # An image file carries no layout report, so subjects are reported as not checked here.
    result["summary"] = verification_summary(result, None, prog.constraints)
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False))


def serve_renderer(
    pipeline: str = typer.Option(..., "--pipeline", help="A diffusers id/path, or `layout` (for testing)."),
    port: int = typer.Option(8000, "--port"),
    host: str = typer.Option("127.0.0.1", "--host", help="0.0.0.0 to accept other machines."),
):
    """Serve a pipeline with the renderer-service protocol (POST /generate, GET /health)."""
    from genevolve.renderers.base import RenderError
    from genevolve.renderers.service import serve

    try:
        serve(pipeline, host=host, port=port)
    except RenderError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
