"""Small HTML pieces every tab uses: escaping and an error box."""

from __future__ import annotations

import html


def error_html(message: str) -> str:
    return f"<div class='ge-error'>{esc(message)}</div>"


def esc(text) -> str:
    return html.escape(str(text if text is not None else ""), quote=True)
