"""Uploaded reference images: images only, within size and pixel limits, judged by their bytes,
copied into the session that uploaded them (by the Generate form or a bench case sent to it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
MAX_UPLOAD_PIXELS = 40_000_000  # ~6300×6300: bigger is a decompression bomb, not a reference photo


def max_upload_mb() -> int:
    """The per-file upload limit in MB (GENEVOLVE_STUDIO_MAX_UPLOAD_MB, default 20)."""
    try:
        return max(1, int(os.environ.get("GENEVOLVE_STUDIO_MAX_UPLOAD_MB", "20")))
    except ValueError:
        return 20


def check_image_upload(path: str | Path) -> str | None:
    """Why an uploaded file cannot be a reference image (None when it can): size, type, pixels, integrity.
    The file's bytes decide, never its name."""
    from PIL import Image

    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
    except OSError:
        return f"{name}: the upload did not arrive; try again"
    limit = max_upload_mb()
    if size > limit * 1024 * 1024:
        return f"{name} is {size / 1024 / 1024:.0f} MB; reference images may be at most {limit} MB (downscale it first)"
    try:
        with Image.open(path) as im:
            fmt = im.format
            pixels = im.width * im.height
            if fmt not in UPLOAD_FORMATS:
                return f"{name} is a {fmt} file; upload a PNG, JPEG, WebP, GIF, BMP or TIFF image"
            if pixels > MAX_UPLOAD_PIXELS:
                return (f"{name} is {im.width}×{im.height} pixels; reference images may have at most "
                        f"{MAX_UPLOAD_PIXELS // 1_000_000} megapixels (downscale it first)")
            im.verify()
    except Image.DecompressionBombError:
        return f"{name} is too large in pixels to open safely; downscale it first"
    except Exception:  # noqa: BLE001 - anything PIL cannot read is not an image we can use
        return f"{name} is not an image (its content is not PNG, JPEG, WebP, GIF, BMP or TIFF, whatever its name says)"
    return None


def copy_uploads(sid: str, uploads) -> tuple[list[str], list[str]]:
    """Copy valid images into the session's uploads folder; returns (kept paths, reasons for the refused)."""
    from app import sessions

    kept, refused = [], []
    if not uploads:
        return kept, refused
    dest = sessions.session_dir(sid, "uploads")
    for item in uploads:
        src = Path(getattr(item, "name", item))
        if not src.is_file():
            continue
        problem = check_image_upload(src)
        if problem:
            refused.append(problem)
            _discard_upload(src)
            continue
        target = dest / src.name
        if src.resolve() != target.resolve():
            shutil.copyfile(src, target)
        kept.append(str(target))
    return kept, refused


def _discard_upload(path: Path) -> None:
    """A refused upload is deleted from Gradio's upload folder, so it is never served back."""
    try:
        from gradio.utils import get_upload_folder

        if path.resolve().is_relative_to(Path(get_upload_folder()).resolve()):
            path.unlink(missing_ok=True)
    except Exception:  # noqa: BLE001 - keeping a refused file is untidy, not unsafe: it is not shown
        pass
