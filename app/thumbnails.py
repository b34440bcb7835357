"""Images as small inline data URIs, so a page never needs a file route into a session's folder."""

from __future__ import annotations

import base64
import io
import os
from functools import lru_cache


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
