"""What every renderer shares: the interface, its error, and safe reference loading.

A renderer turns a Program into a PIL image. Backends differ in how (a layout engine, a local
diffusers pipeline, a remote service, a hosted API); they agree on the call signature, on the
sizes they accept and on refusing bad input with a message that says what to do.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Callable

from PIL import Image, ImageOps, UnidentifiedImageError

from genevolve.program import Program, ProgramError

# A reference larger than this is refused before its pixels are decoded: a 20000x20000 PNG
# would take 1.6 GB of RAM and is never what a user meant to pass.
MAX_REFERENCE_PIXELS = 64_000_000
MAX_OUTPUT_SIDE = 4096
MIN_OUTPUT_SIDE = 64
# References are never needed above this size by any backend; downscaling early keeps memory flat.
REFERENCE_WORKING_SIDE = 2048

Progress = Callable[[int, int], None]  # (step done, total steps)


class RenderError(RuntimeError):
    """A render that cannot happen; the message says what to change."""


class Renderer:
    """One backend behind one call: ``render(program, size, seed) -> PIL.Image``."""

    name = "renderer"
    # Generative backends may misspell text; the typeset stage exists for them.
    generative = True

    def render(self, program: Program, size: tuple[int, int] | None = None, seed: int = 0,
               progress: Progress | None = None) -> Image.Image:
        raise NotImplementedError

    def describe(self) -> dict:
        """Extra facts for the render report (model, device, url...)."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


# ---------------------------------------------------------------- programs

def as_program(program) -> Program:
    """Accept a Program or its JSON dict; refuse programs with nothing to draw."""
    if isinstance(program, dict):
        try:
            program = Program.from_answer(program)
        except ProgramError as exc:
            raise RenderError(f"the program is empty or malformed ({exc}); write a gen_prompt") from exc
    if not isinstance(program, Program):
        raise RenderError(f"expected a Program, got {type(program).__name__}")
    if not program.gen_prompt.strip() and not program.reference_images and not program.text_constraints():
        raise RenderError("the program is empty: it has no gen_prompt, no reference images and no text; "
                          "write at least a gen_prompt describing the image")
    return program


# ---------------------------------------------------------------- sizes

def check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        w, h = int(size[0]), int(size[1])
    except (TypeError, ValueError, IndexError) as exc:
        raise RenderError(f"size must be (width, height), got {size!r}") from exc
    if not (MIN_OUTPUT_SIDE <= w <= MAX_OUTPUT_SIDE and MIN_OUTPUT_SIDE <= h <= MAX_OUTPUT_SIDE):
        raise RenderError(f"size {w}x{h} is out of range: each side must be {MIN_OUTPUT_SIDE}..{MAX_OUTPUT_SIDE} px")
    return w, h


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"1024x768"`` -> (1024, 768); None/"" -> None."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX×*,]\s*(\d+)\s*", text)
    if not m:
        raise RenderError(f"size must look like WIDTHxHEIGHT (e.g. 1024x768), got {text!r}")
    return check_size((int(m.group(1)), int(m.group(2))))


def round_to(value: float, multiple: int = 16) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def size_for_aspect(aspect: float, area: int = 1024 * 1024, multiple: int = 16) -> tuple[int, int]:
    """A (w, h) of about ``area`` pixels with the given aspect ratio, sides multiples of ``multiple``."""
    aspect = min(max(aspect, 1 / 3), 3.0)
    h = (area / aspect) ** 0.5
    return round_to(h * aspect, multiple), round_to(h, multiple)


_RATIO_RE = re.compile(r"\b(1:1|3:4|4:3|2:3|3:2|9:16|16:9|4:5|5:4|21:9)\b")


def default_size(program: Program, reference_sizes: list[tuple[int, int]] | None = None,
                 area: int = 1024 * 1024, multiple: int = 16) -> tuple[int, int]:
    """The size to render when none is asked: an explicit ratio in the prompt, else the first
    reference's aspect ratio, else a portrait poster for poster-like words, else square."""
    text = program.gen_prompt.lower()
    m = _RATIO_RE.search(text)
    if m:
        a, b = (int(x) for x in m.group(1).split(":"))
        return size_for_aspect(a / b, area, multiple)
    if reference_sizes:
        w, h = reference_sizes[0]
        return size_for_aspect(w / h, area, multiple)
    if re.search(r"\b(banner|widescreen|wide|landscape|billboard|thumbnail|header)\b", text):
        return size_for_aspect(16 / 9, area, multiple)
    if re.search(r"\b(poster|cover|flyer|book|magazine|portrait|leaflet|menu)\b", text):
        return size_for_aspect(3 / 4, area, multiple)
    return size_for_aspect(1.0, area, multiple)


# ---------------------------------------------------------------- references

def reference_paths(program: Program) -> list[tuple[str, str]]:
    """(img_id, path) for each reference; a reference without a path is an error."""
    out = []
    for ref in program.reference_images:
        if not ref.path:
            raise RenderError(f"reference {ref.img_id} has no file path; render the program from the agent "
                              f"run that resolved it, or add \"path\" to that reference in program.json")
        out.append((ref.img_id, ref.path))
    return out


def open_reference(path: str | Path, img_id: str = "reference",
                   max_pixels: int = MAX_REFERENCE_PIXELS,
                   working_side: int = REFERENCE_WORKING_SIDE) -> Image.Image:
    """Open an image safely: refuse missing, corrupt and oversized files with a clear message.

    The pixel count is read from the header before any pixel is decoded; JPEGs are decoded at a
    reduced scale when that is enough for the working size.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise RenderError(f"reference {img_id}: file not found at {p}; check the path in the program "
                          f"or re-run the search that produced it")
    try:
        img = Image.open(p)
    except Image.DecompressionBombError as exc:
        # Pillow refuses beyond ~179 MP while reading the header; say it in our terms.
        m = re.search(r"\((\d+) pixels\)", str(exc))
        mp = f"{int(m.group(1)) / 1e6:.0f} MP" if m else "too many pixels"
        raise RenderError(f"reference {img_id}: {p} has {mp}, above the {max_pixels / 1e6:.0f} MP limit; "
                          f"downscale it first (e.g. to 2048 px on the long side)") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise RenderError(f"reference {img_id}: {p} is not a readable image (corrupt, truncated or unsupported "
                          f"format: {exc}); replace it with a PNG or JPEG") from exc
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise RenderError(f"reference {img_id}: {p} is {w}x{h}, {w * h / 1e6:.0f} MP, above the "
                          f"{max_pixels / 1e6:.0f} MP limit; downscale it first (e.g. to 2048 px on the long side)")
    try:
        if img.format == "JPEG":
            img.draft("RGB", (working_side, working_side))
        img.load()
        img = ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt data surfaces here, in many types
        raise RenderError(f"reference {img_id}: {p} is corrupt or truncated ({exc}); replace the file") from exc
    if img.mode in ("RGBA", "LA", "P", "PA"):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        img = flat
    else:
        img = img.convert("RGB")
    if max(img.size) > working_side:
        img.thumbnail((working_side, working_side), Image.Resampling.LANCZOS)
    return img


def load_references(program: Program) -> list[Image.Image]:
    return [open_reference(path, img_id) for img_id, path in reference_paths(program)]


def image_to_data_uri(img: Image.Image, max_side: int = 1536) -> str:
    """A reference as a ``data:`` URI (JPEG, downscaled) for HTTP backends."""
    img = img.convert("RGB")
    if max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_image_bytes(data: str | bytes, what: str = "the response") -> Image.Image:
    """Decode base64 (optionally a data URI) into an RGB image, with a clear error."""
    try:
        if isinstance(data, str):
            if data.startswith("data:"):
                data = data.split(",", 1)[1]
            data = base64.b64decode(data, validate=False)
        img = Image.open(io.BytesIO(data))
        if img.size[0] * img.size[1] > MAX_REFERENCE_PIXELS:
            raise RenderError(f"{what} holds an image of {img.size[0]}x{img.size[1]}, above the pixel limit")
        img.load()
        return img.convert("RGB")
    except RenderError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise RenderError(f"{what} did not contain a decodable image ({type(exc).__name__}: {exc})") from exc


def fit_exact(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Cover-crop and resize to exactly ``size`` (backends that round sizes end here)."""
    if img.size == tuple(size):
        return img
    return ImageOps.fit(img, size, Image.Resampling.LANCZOS)
