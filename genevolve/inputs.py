"""Checks on what a user hands us, made before any work starts: files, folders, backend specs.

Each check answers ``None`` (usable) or raises ``UserError`` with one line that names the thing and
what to do, so a run never spends minutes planning for an image path that is a FIFO or a renderer
spec that cannot exist.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from genevolve.errors import EnvironmentFault, UserError

REFERENCE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
MAX_REFERENCE_PIXELS = 40_000_000  # ~6300x6300; more is a decompression bomb, not a reference photo
MAX_REFERENCE_MB = 50


def check_reference_image(path: str | Path, flag: str = "--image") -> Path:
    """``path`` when it is a readable image of a known format within the limits; UserError otherwise.

    Judged by the bytes, never the name: a text file called x.png is refused. Special files (a FIFO
    would block the reader forever, a device never ends) are refused before they are opened."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        st = p.stat()  # follows symlinks: a loop raises ELOOP here
    except FileNotFoundError:
        raise UserError(f"{flag} {p}: no such file; check the path") from None
    except OSError as exc:
        raise UserError(f"{flag} {p}: cannot be read ({exc.strerror}); give an image file") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{flag} {p} is a folder; give an image file (PNG, JPEG, WebP…)")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{flag} {p} is not a regular file (a pipe or device); give an image file")
    if st.st_size == 0:
        raise UserError(f"{flag} {p} is empty; give an image file")
    if st.st_size > MAX_REFERENCE_MB * 1024 * 1024:
        raise UserError(f"{flag} {p} is {st.st_size / 2**20:.0f} MB; a reference image may be at most "
                        f"{MAX_REFERENCE_MB} MB (downscale it first)")
    try:
        with Image.open(p) as im:
            fmt, pixels = im.format, im.width * im.height
            if fmt not in REFERENCE_FORMATS:
                raise UserError(f"{flag} {p} is a {fmt} image; use PNG, JPEG, WebP, GIF, BMP or TIFF")
            if pixels > MAX_REFERENCE_PIXELS:
                raise UserError(f"{flag} {p} has {pixels / 1e6:.0f} megapixels; at most "
                                f"{MAX_REFERENCE_PIXELS / 1e6:.0f} are accepted (downscale it first)")
            im.load()  # a truncated file fails here, not minutes later in a renderer
    except UserError:
        raise
    except UnidentifiedImageError:
        raise UserError(f"{flag} {p} is not an image (its bytes are no PNG, JPEG, WebP, GIF, BMP or TIFF)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"{flag} {p} is a damaged image ({' '.join(str(exc).split())}); re-export it") from None
    return p


def check_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create the output folder ``path`` now (before any work), or say why it cannot be one.

    A path that is a file, lies below a file, or cannot be created is refused with one line; a
    folder we may not write is an environment fault (exit 1)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p} is a file; give a folder (it is created if missing)")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{flag} {p} lies below {parent}, which is a file; choose another folder")
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".genevolve-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise EnvironmentFault(f"cannot write in {flag} {p} ({exc.strerror}); choose a folder you can write") from None
    return p


def check_renderer_spec(spec: str) -> None:
    """Build (not load) the renderer a spec names, so a bogus spec or option fails now, not after
    the whole run; weights and connections are only touched at the first render."""
    from genevolve.renderers import make_renderer

    try:
        make_renderer(spec)
    except Exception as exc:  # noqa: BLE001 - any construction failure is a spec problem
        raise UserError(f"--renderer {spec}: {' '.join(str(exc).split())}") from None


def check_judge_spec(spec: str) -> None:
    """Build the judge a spec names (endpoints connect lazily), so bad options fail before any case."""
    from genevolve.judges import make_judge

    try:
        make_judge(spec)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"--judge {spec}: {' '.join(str(exc).split())}") from None


def check_batch_inputs(*, policy: str, policy_flag: str, renderer: str, judge: str, config, out) -> None:
    """What a batch command (bench run, data build) names, checked before its first case: the
    policy spec, the renderer and judge specs, the settings file and the output folder."""
    from genevolve.policies import check_policy_spec

    try:
        check_policy_spec(policy)
    except ValueError as exc:
        raise UserError(f"{policy_flag} {policy}: {exc}") from None
    check_renderer_spec(renderer)
    check_judge_spec(judge)
    if config is not None:
        from genevolve.config import read_settings_file

        read_settings_file(config)
    check_output_dir(out)
