"""``genevolve render``, ``genevolve verify`` and ``genevolve serve-renderer``.

genevolve/cli.py registers these functions as sub-commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def load_program_file(path: Path, record: str | None = None, notes: list | None = None):
    """Read program.json (ours or the official answer JSON); resolve relative reference paths.

    A program without ``constraints`` gets them derived from its prompt (quoted strings etc.),
    so an official answer file can be rendered and verified as it is. An official result record
    (or a results.json, one record picked by ``record``) renders what the official
    generate_images.py renders for it; ``notes`` receives where that differs from the answer.
    """
    from genevolve.program import Program, ProgramError, derive_constraints

    if not path.is_file():
        raise typer.BadParameter(f"program file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise typer.BadParameter(f"{path} is not valid JSON: {exc}") from exc
    from genevolve.official import records as official

    if isinstance(data, list) or official.is_official_record(data) or record is not None:
        return _official_program(path, record, notes)
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


# Formats `render --out` writes, by extension (what PIL can save and a browser can show).
OUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def fail(message: str) -> None:
    """One line on stderr, exit status 2: the user's input needs changing."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def check_out_path(out: Path) -> str:
    """The image format for ``out``, or exit 2 saying what to change (checked before rendering)."""
    try:
        is_dir = out.is_dir()
    except OSError as exc:  # e.g. a name longer than the file system allows
        fail(f"--out {out}: {exc.strerror or exc}; choose another path")
    if is_dir:
        fail(f"--out {out} is a folder; give a file name such as {out / 'image.png'}")
    fmt = OUT_FORMATS.get(out.suffix.lower())
    if fmt is None:
        fail(f"--out {out}: unknown image extension {out.suffix or '(none)'!r}; use .png, .jpg or .webp")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        fail(f"--out {out}: {parent} is a file, not a folder; choose another path")
    return fmt


def save_image_file(image, out: Path, fmt: str) -> None:
    """Encode in memory, then write atomically: a failed write leaves no half-written image."""
    import io

    from genevolve.durable import write_atomic

    buf = io.BytesIO()
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.save(buf, format=fmt)
    try:
        write_atomic(out, buf.getvalue())
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}; choose a writable path for --out")


def _official_program(path: Path, record_id: str | None, notes: list | None = None):
    from genevolve.official import records as official

    try:
        rec = official.select_record(official.load_results(path), record_id, str(path))
        program, why = official.record_program(rec, base_dir=path.parent)
    except official.RecordError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if notes is not None:
        notes.extend(why)
    return program


def render(
    program: Path = typer.Argument(..., help="program.json (from `genevolve run --out`), an answer JSON, or an "
                                   "official result record / results.json (with --record)."),
    renderer: str = typer.Option("layout", "--renderer", help="layout | diffusers:<id> | service:<url>[,<url>] | gemini[:<model>]"),
    out: Path = typer.Option(..., "--out", help="Where to write the image (PNG/JPEG by extension)."),
    typeset: bool = typer.Option(False, "--typeset", help="Set the exact text constraints onto a generative render."),
    size: Optional[str] = typer.Option(None, "--size", help="WIDTHxHEIGHT, e.g. 1024x768 (default: from the program)."),
    seed: int = typer.Option(0, "--seed", help="Renderer seed."),
    report: bool = typer.Option(False, "--json", help="Print the render report as JSON."),
    record: Optional[str] = typer.Option(None, "--record", help="With an official results.json: the record's id (or index)."),
):
    """Render PROGRAM.json (or an official result record) to an image."""
    from genevolve.renderers import make_renderer, render_with_report
    from genevolve.renderers.base import RenderError, parse_size

    fmt = check_out_path(out)
    notes: list[str] = []
    prog = load_program_file(program, record, notes)
    for note in notes:  # an official record renders as the official generate_images.py renders it
        typer.echo(f"note: {note}", err=True)
    try:
        backend = make_renderer(renderer)
        image, info = render_with_report(backend, prog, size=parse_size(size), seed=seed, typeset=typeset)
    except RenderError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    save_image_file(image, out, fmt)
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
    from genevolve.judges.verify import ImageInputError, verify_image

    if not image.is_file():
        fail(f"image not found: {image}")
    from genevolve.judges.structure import verification_summary

    prog = load_program_file(program)
    try:
        result = verify_image(image, prog)
    except ImageInputError as exc:
        fail(str(exc))
    # An image file carries no layout report, so subjects are reported as not checked here.
    result["summary"] = verification_summary(result, None, prog.constraints)
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False))


def serve_renderer(
    pipeline: str = typer.Option(..., "--pipeline", help="A diffusers id/path, or `layout` (for testing)."),
    port: int = typer.Option(8000, "--port"),
    host: str = typer.Option("127.0.0.1", "--host", help="0.0.0.0 to accept other machines."),
    token: Optional[str] = typer.Option(None, "--token", envvar="GENEVOLVE_RENDERER_TOKEN",
                                        help="Require 'Authorization: Bearer TOKEN' (clients set GENEVOLVE_RENDERER_TOKEN)."),
    max_body_mb: float = typer.Option(32, "--max-body-mb", help="Largest request body accepted (MB)."),
):
    """Serve a pipeline with the renderer-service protocol (POST /generate, GET /health)."""
    from genevolve.renderers.base import RenderError
    from genevolve.renderers.service import serve

    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        typer.echo("warning: serving to other machines without --token: anyone who can reach this port can "
                   "use the GPU", err=True)
    if max_body_mb <= 0:
        fail(f"--max-body-mb must be positive, got {max_body_mb:g}")
    try:
        serve(pipeline, host=host, port=port, token=token, max_body=int(max_body_mb * 1024 * 1024))
    except RenderError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
