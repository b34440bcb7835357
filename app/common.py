"""What every tab shares: sessions, the store, per-session folders, optional parts, small HTML helpers.

A session is one browser: its id lives in the browser's localStorage (so a reload keeps the
history) and falls back to Gradio's per-connection ``session_hash``. Runs carry that id in the
store, and images a session uploads or renders live under ``$GENEVOLVE_HOME/studio/<session>/``,
so two browsers never see each other's work.
"""

from __future__ import annotations

import base64
import html
import importlib
import io
import os
import re
import threading
import uuid
from functools import lru_cache
from pathlib import Path

_SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{4,64}$")


def settings():
    """Settings as the CLI reads them, plus an optional file named by GENEVOLVE_STUDIO_CONFIG (YAML/JSON)."""
    from genevolve.config import Settings

    return Settings.load(os.environ.get("GENEVOLVE_STUDIO_CONFIG") or None)


@lru_cache(maxsize=4)
def _store_at(path: str):
    from genevolve.store import Store

    return Store(path)


def store():
    """The studio's store (the same SQLite file the CLI uses)."""
    return _store_at(settings().store_path)


def studio_home() -> Path:
    from genevolve.config import genevolve_home

    path = genevolve_home() / "studio"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_session_id() -> str:
    return uuid.uuid4().hex[:16]


def session_id(browser_sid: str | None, request=None) -> str:
    """The caller's session: the browser-stored id, else the connection's session hash."""
    if browser_sid and _SESSION_RE.match(browser_sid):
        return browser_sid
    hash_ = getattr(request, "session_hash", None) if request is not None else None
    if hash_ and _SESSION_RE.match(hash_):
        return hash_
    return "anonymous"


def session_dir(sid: str, *parts: str) -> Path:
    """A folder private to one session (never shared between browsers)."""
    if not _SESSION_RE.match(sid) and sid != "anonymous":
        raise ValueError(f"bad session id {sid!r}")
    path = studio_home() / "sessions" / sid
    for p in parts:
        path = path / p
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_inspector() -> bool:
    """A trusted annotation deployment (GENEVOLVE_STUDIO_ANNOTATOR=1) sees every browser's runs."""
    return os.environ.get("GENEVOLVE_STUDIO_ANNOTATOR", "").lower() in ("1", "true", "yes")


def can_see(run: dict, sid: str) -> bool:
    """A session sees its own runs and runs that belong to no browser (CLI, bench, data pipeline)."""
    return shared_inspector() or run.get("session") in (None, "", sid)


# ---------------------------------------------------------------- cancellation, per session

_cancel_lock = threading.Lock()
_cancel_events: dict[str, threading.Event] = {}


def cancel_event(sid: str, *, fresh: bool = False) -> threading.Event:
    """The cancel flag of a session's current run; ``fresh`` starts a new run's flag."""
    with _cancel_lock:
        if fresh or sid not in _cancel_events:
            _cancel_events[sid] = threading.Event()
        return _cancel_events[sid]


# ---------------------------------------------------------------- uploads: images only, within limits

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


# ---------------------------------------------------------------- optional parts of the build


def available(module: str) -> bool:
    """Whether an optional part of the library is in this build (without importing heavy code twice)."""
    try:
        importlib.import_module(module)
        return True
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            return False
        raise


def missing_html(what: str, module: str) -> str:
    return (f"<div class='ge-missing'><b>{esc(what)} is not available in this build.</b> "
            f"The module <code>{esc(module)}</code> is not installed; the rest of the studio works without it.</div>")


def error_html(message: str) -> str:
    return f"<div class='ge-error'>{esc(message)}</div>"


def esc(text) -> str:
    return html.escape(str(text if text is not None else ""), quote=True)


# ---------------------------------------------------------------- images as inline thumbnails


@lru_cache(maxsize=512)
def _thumb(path: str, mtime: float, size: int) -> str:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumb_uri(path: str | None, size: int = 160) -> str | None:
    """A small inline data URI, so the page never needs a file route into another session's folder."""
    if not path or not os.path.isfile(path):
        return None
    try:
        return _thumb(str(path), os.path.getmtime(path), size)
    except Exception:  # noqa: BLE001 - a broken file is shown as a placeholder
        return None


def gpu(fn):
    """Wrap GPU work for Hugging Face ZeroGPU when the ``spaces`` package is present."""
    try:
        import spaces  # type: ignore
    except ImportError:
        return fn
    return spaces.GPU(fn)
