"""What a failing web backend looks like, and the breakers that switch one off for a while.

A web backend raises ``BackendUnavailable`` when it cannot answer (network, quota, a reply it
cannot parse); the tool then answers from its local backend. The breakers are process-wide and
keyed by backend name, so text and image search share one per web service: a machine without
network pays one timeout, not one per call.
"""

from __future__ import annotations

import threading
import time


class BackendUnavailable(RuntimeError):
    """The backend could not answer (network, quota, parse error); the caller falls back."""


class CircuitBreaker:
    """After a failure, skip the backend for ``cooldown_s``; then let one call try again."""

    def __init__(self, cooldown_s: float = 300.0):
        self.cooldown_s = cooldown_s
        self._lock = threading.Lock()
        self._open_until = 0.0
        self.last_error: str | None = None

    def allow(self) -> bool:
        with self._lock:
            return time.monotonic() >= self._open_until

    def trip(self, error: str) -> None:
        with self._lock:
            self._open_until = time.monotonic() + self.cooldown_s
            self.last_error = error

    def reset(self) -> None:
        with self._lock:
            self._open_until = 0.0
            self.last_error = None


_BREAKERS: dict[str, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def breaker_for(name: str) -> CircuitBreaker:
    """The process-wide breaker of one web backend (shared by every tool instance)."""
    with _BREAKERS_LOCK:
        return _BREAKERS.setdefault(name, CircuitBreaker())


def reset_breakers() -> None:
    with _BREAKERS_LOCK:
        for b in _BREAKERS.values():
            b.reset()
