"""Per-browser sessions: ids, private folders, which runs a session may see, and cancel flags.

A session is one browser: its id lives in the browser's localStorage (so a reload keeps the
history) and falls back to Gradio's per-connection ``session_hash``. Runs carry that id in the
store, and images a session uploads or renders live under ``$GENEVOLVE_HOME/studio/sessions/<session>/``,
so two browsers never see each other's work.
"""

from __future__ import annotations

import re
import threading
import uuid
from pathlib import Path

from app.storage import studio_home
from genevolve.specs import env_flag

_SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{4,64}$")


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
    return env_flag("GENEVOLVE_STUDIO_ANNOTATOR")


def can_see(run: dict, sid: str) -> bool:
    """A session sees its own runs and runs that belong to no browser (CLI, bench, data pipeline)."""
    return shared_inspector() or run.get("session") in (None, "", sid)


_cancel_lock = threading.Lock()
_cancel_events: dict[str, threading.Event] = {}


def cancel_event(sid: str, *, fresh: bool = False) -> threading.Event:
    """The cancel flag of a session's current run; ``fresh`` starts a new run's flag."""
    with _cancel_lock:
        if fresh or sid not in _cancel_events:
            _cancel_events[sid] = threading.Event()
        return _cancel_events[sid]
