"""Optional parts of the build: whether one is installed, and what a tab shows when it is not."""

from __future__ import annotations

import importlib

from app.markup import esc


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
