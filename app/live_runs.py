"""Runs that belong to the browser session, not to the HTTP stream that started them.

A Generate click starts a ``LiveRun`` on a worker thread and then only *follows* it. The page's
stream can end at any time (a reload, a closed tab, a dropped connection) without touching
the run; the next page load of the same session follows it again, or shows its result when it
has finished meanwhile. Stop is the only way to end a run early.

What the page shows is kept as fields of the run (status line, event panel, gallery, program,
image, verification, downloads, history), each with a version number, so a follower sends
only the fields that changed since it last looked, and a new follower gets everything.

Shared local models (``nano``, ``hf:``, ``diffusers:``) go through one FIFO queue with
``slots`` places: weights are loaded once per process and two generations at once on one
device only slow each other down. Runs that need no shared model (the planner, an HTTP policy,
a renderer service) never wait in that queue. A queued run's status line says its place.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Callable

from genevolve.specs import spec_kind

FIELDS = ("status", "events", "gallery", "program", "image", "verify", "downloads", "history")
FINISHED_KEEP_S = 6 * 3600  # a finished run stays re-attachable this long (then the store has it)


def default_concurrency() -> int:
    """How many runs may hold a model slot at once: GENEVOLVE_CONCURRENCY, else 2 with a GPU, 1 without."""
    env = os.environ.get("GENEVOLVE_CONCURRENCY")
    if env:
        return max(1, int(env))
    try:
        import torch

        return 2 if torch.cuda.is_available() else 1
    except Exception:  # noqa: BLE001
        return 1


def needs_shared_model(policy_spec: str, renderer_spec: str) -> bool:
    """Whether a run loads weights into this process (and so waits for a model slot)."""
    return spec_kind(policy_spec) in ("nano", "hf") or spec_kind(renderer_spec) == "diffusers"


class LiveRun:
    def __init__(self, sid: str, label: str, *, needs_model: bool, cancel: threading.Event):
        self.id = uuid.uuid4().hex[:10]
        self.sid = sid
        self.label = label
        self.needs_model = needs_model
        self.cancel = cancel
        self.started_at = time.time()
        self.finished_at: float | None = None
        self._cond = threading.Condition()
        self._values: dict[str, object] = {}
        self._versions: dict[str, int] = {}
        self._clock = 0
        self.done = False

    def set(self, **fields) -> None:
        """Publish new values of some page fields (wakes every follower)."""
        with self._cond:
            for name, value in fields.items():
                if name not in FIELDS:
                    raise KeyError(name)
                self._clock += 1
                self._values[name] = value
                self._versions[name] = self._clock
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self.done = True
            self.finished_at = time.time()
            self._clock += 1
            self._cond.notify_all()

    def changes(self, since: int, timeout: float = 1.0) -> tuple[int, dict, bool]:
        """Fields changed after clock ``since`` (waits up to ``timeout`` for one); (clock, fields, done)."""
        with self._cond:
            if self._clock <= since and not self.done:
                self._cond.wait(timeout)
            changed = {k: self._values[k] for k, v in self._versions.items() if v > since}
            return self._clock, changed, self.done

    def value(self, name: str):
        with self._cond:
            return self._values.get(name)


class ModelQueue:
    """A first-come, first-served queue for the shared local-model slots."""

    def __init__(self, slots: int):
        self.slots = max(1, int(slots))
        self._cond = threading.Condition()
        self._holders: list[str] = []
        self._waiting: list[str] = []

    def position(self, run_id: str) -> int | None:
        """1-based place among the waiting runs (None when not waiting)."""
        with self._cond:
            return self._waiting.index(run_id) + 1 if run_id in self._waiting else None

    def snapshot(self) -> tuple[int, int]:
        """(runs holding a slot, runs waiting)."""
        with self._cond:
            return len(self._holders), len(self._waiting)

    def acquire(self, run_id: str, cancel: threading.Event | None = None,
                on_wait: Callable[[int, int], None] | None = None) -> bool:
        """Wait for a slot; ``on_wait(place, running)`` is called whenever the place changes.
        Returns False when cancelled while waiting."""
        with self._cond:
            self._waiting.append(run_id)
            last = None
            try:
                while True:
                    place = self._waiting.index(run_id) + 1
                    if place <= self.slots - len(self._holders):
                        self._waiting.remove(run_id)
                        self._holders.append(run_id)
                        return True
                    if cancel is not None and cancel.is_set():
                        self._waiting.remove(run_id)
                        self._cond.notify_all()
                        return False
                    if on_wait is not None and place != last:
                        last = place
                        on_wait(place, len(self._holders))
                    self._cond.wait(0.25)
            except BaseException:
                if run_id in self._waiting:
                    self._waiting.remove(run_id)
                raise

    def release(self, run_id: str) -> None:
        with self._cond:
            if run_id in self._holders:
                self._holders.remove(run_id)
            self._cond.notify_all()


class RunRegistry:
    """The latest run of each session, live or finished."""

    def __init__(self, slots: int = 1):
        self._lock = threading.Lock()
        self._by_session: dict[str, LiveRun] = {}
        self.queue = ModelQueue(slots)

    def current(self, sid: str) -> LiveRun | None:
        with self._lock:
            run = self._by_session.get(sid)
            if run is not None and run.done and time.time() - (run.finished_at or 0) > FINISHED_KEEP_S:
                del self._by_session[sid]
                return None
            return run

    def start(self, sid: str, label: str, work: Callable[[LiveRun], None], *, needs_model: bool,
              cancel: threading.Event) -> tuple[LiveRun, bool]:
        """Start ``work(run)`` on a thread unless the session already has a live run.
        Returns (the session's run, whether it is new)."""
        with self._lock:
            old = self._by_session.get(sid)
            if old is not None and not old.done:
                return old, False
            run = LiveRun(sid, label, needs_model=needs_model, cancel=cancel)
            self._by_session[sid] = run

        def body():
            try:
                work(run)
            finally:
                run.finish()

        threading.Thread(target=body, daemon=True, name=f"run-{sid[:8]}-{run.id}").start()
        return run, True


_registry: RunRegistry | None = None
_registry_lock = threading.Lock()


def registry() -> RunRegistry:
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = RunRegistry(default_concurrency())
        return _registry
