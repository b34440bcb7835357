"""A requests-per-minute limiter shared by every thread that calls one API endpoint.

Judges call hosted endpoints from many worker threads; the provider's quota is per key, not
per thread, so the limit has to be one object per endpoint for the whole process. The limiter
is a sliding window: at most ``max_calls`` acquisitions in any ``period_s`` seconds. A 429
answer can also push the whole endpoint back (``penalize``), so a storm of refusals slows every
thread down at once instead of each thread hammering on its own schedule.
"""

from __future__ import annotations

import collections
import threading
import time


class RateLimiter:
    def __init__(self, max_calls: int | None, period_s: float = 60.0):
        if max_calls is not None and max_calls < 1:
            raise ValueError("max_calls must be at least 1 (or None for no limit)")
        self.max_calls = max_calls
        self.period_s = float(period_s)
        self._times: collections.deque[float] = collections.deque()
        self._not_before = 0.0
        self._cond = threading.Condition()

    def acquire(self) -> float:
        """Block until a call is allowed; returns the seconds waited."""
        started = time.monotonic()
        with self._cond:
            while True:
                now = time.monotonic()
                wait = self._not_before - now
                if self.max_calls is not None:
                    while self._times and now - self._times[0] >= self.period_s:
                        self._times.popleft()
                    if len(self._times) >= self.max_calls:
                        wait = max(wait, self._times[0] + self.period_s - now)
                if wait <= 0:
                    if self.max_calls is not None:
                        self._times.append(now)
                    return now - started
                self._cond.wait(timeout=wait)

    def penalize(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (e.g. the server's Retry-After)."""
        with self._cond:
            self._not_before = max(self._not_before, time.monotonic() + max(0.0, seconds))
            self._cond.notify_all()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        return False


_registry: dict[str, RateLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(key: str, rpm: int | None = None, period_s: float = 60.0) -> RateLimiter:
    """The process-wide limiter for an endpoint key (usually its base URL).

    Passing ``rpm`` sets (or changes) that endpoint's limit; ``None`` keeps the current one,
    and an endpoint never configured gets no limit beyond the 429 back-off.
    """
    with _registry_lock:
        lim = _registry.get(key)
        if lim is None:
            if rpm is None:
                rpm, period_s = _default_rpm
            lim = _registry[key] = RateLimiter(rpm, period_s)
        elif rpm is not None and (lim.max_calls != rpm or lim.period_s != period_s):
            with lim._cond:
                lim.max_calls, lim.period_s = rpm, float(period_s)
                lim._cond.notify_all()
        return lim


def set_default_rpm(rpm: int | None, period_s: float = 60.0) -> None:
    """Apply one limit to every endpoint configured from now on and every one already known."""
    global _default_rpm
    _default_rpm = (rpm, period_s)
    with _registry_lock:
        for lim in _registry.values():
            with lim._cond:
                lim.max_calls, lim.period_s = rpm, float(period_s)
                lim._cond.notify_all()


_default_rpm: tuple[int | None, float] = (None, 60.0)


def default_rpm() -> tuple[int | None, float]:
    return _default_rpm
