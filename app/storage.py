"""The studio's settings, and the store and home folder they point to (the same SQLite store the CLI uses)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path


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
