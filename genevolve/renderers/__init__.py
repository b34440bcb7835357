"""Renderers: one class per backend behind ``render(program, size, seed) -> PIL.Image``.

Specs (the same in CLI, app and config):
``layout`` · ``diffusers:<id-or-path>[?steps=N&offload=1&dtype=D&device=D]`` ·
``service:<url>[,<url>…]`` · ``gemini[:<model>]``.
Heavy libraries load inside the backend module that needs them, only when it is built.
"""

from __future__ import annotations

import time

from genevolve.renderers.base import RenderError, Renderer, as_program, check_size

__all__ = ["RenderError", "Renderer", "make_renderer", "render_with_report"]

RENDERER_SPECS = ("layout", "diffusers:<id-or-path>", "service:<url>[,<url>…]", "gemini[:<model>]")


def make_renderer(spec: str) -> Renderer:
    """Build the renderer a spec names; unknown specs fail with the list of known ones."""
    spec = (spec or "layout").strip()
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind == "layout":
        from genevolve.renderers.layout import LayoutRenderer
        return LayoutRenderer()
    if kind == "diffusers":
        if not arg:
            raise RenderError("diffusers needs a model id or path: diffusers:<id-or-path>")
        from genevolve.renderers.diffusers import DiffusersRenderer
        return DiffusersRenderer.from_spec(arg)
    if kind == "service":
        if not arg:
            raise RenderError("service needs at least one URL: service:http://host:port[,http://host2:port]")
        from urllib.parse import parse_qsl

        from genevolve.renderers.service import ServiceRenderer
        urls, _, query = arg.partition("?")  # service:<url>[,<url>][?size=official&num_images_per_prompt=1]
        opts = dict(parse_qsl(query))
        unknown = set(opts) - {"size", "num_images_per_prompt"}
        if unknown:
            raise RenderError(f"unknown service option(s) {', '.join(sorted(unknown))}; "
                              "use ?size=official and/or ?num_images_per_prompt=N")
        try:
            n = int(opts.get("num_images_per_prompt", 1))
        except ValueError:
            raise RenderError("num_images_per_prompt must be a whole number") from None
        return ServiceRenderer([u.strip() for u in urls.split(",") if u.strip()], size_mode=opts.get("size", "ours"),
                               num_images_per_prompt=n)
    if kind == "gemini":
        from genevolve.renderers.gemini import GeminiRenderer
        return GeminiRenderer(model=arg or None)
    raise RenderError(f"unknown renderer {spec!r}; use one of: {', '.join(RENDERER_SPECS)}")


def render_with_report(renderer: Renderer, program, *, size=None, seed: int = 0, typeset: bool = False,
                       progress=None):
    """Render, optionally typeset the exact text, and say what was done.

    Returns ``(image, report)``; the report (backend, seed, width, height, elapsed_s, typeset,
    warnings, and the backend's own facts) goes into the trajectory record and the store.
    """
    program = as_program(program)
    if size is not None:
        size = check_size(size)
    warnings: list[str] = []
    t0 = time.perf_counter()
    image = renderer.render(program, size=size, seed=seed, progress=progress)
    render_s = time.perf_counter() - t0
    report = {"backend": renderer.name, "seed": seed}
    typeset_info = None
    did_typeset = False
    if typeset:
        texts = program.text_constraints()
        if not renderer.generative:
            warnings.append(f"{renderer.name} already sets the exact text; typeset skipped")
        elif not texts:
            warnings.append("the program has no text constraints; typeset skipped")
        else:
            from genevolve.renderers.typeset import typeset as typeset_image
            image, typeset_info = typeset_image(image, texts)
            did_typeset = True
    report.update({
        "width": image.width, "height": image.height,
        "elapsed_s": round(time.perf_counter() - t0, 4), "render_s": round(render_s, 4),
        "typeset": did_typeset, "warnings": warnings,
    })
    if typeset_info:
        report["typeset_region"] = typeset_info.get("region")
    if not renderer.generative or did_typeset:  # we drew the text ourselves: could we draw every glyph?
        from genevolve.renderers.typeset import missing_glyph_warning

        glyphs = missing_glyph_warning(program.text_constraints())
        if glyphs:
            warnings.append(glyphs)
    report.update(renderer.describe())
    # What the renderer says it drew (the layout renderer: subjects, counts, boxes); a judge
    # checks structure from this, and nothing here claims more than the backend reported.
    layout = image.info.get("genevolve_layout")
    if layout is not None:
        report["layout"] = layout
        if layout.get("warning"):
            warnings.append(layout["warning"])
    image.info["genevolve_render"] = report
    return image, report
