"""Run one function on many threads released at the same instant, to provoke races."""

from __future__ import annotations

import threading


def race(fn, n: int) -> tuple[list, list[BaseException]]:
    """``fn(i)`` on ``n`` threads that all start together; returns (results, errors) in no order."""
    start = threading.Barrier(n)
    results, errors = [], []

    def one(i):
        start.wait()
        try:
            results.append(fn(i))
        except Exception as exc:  # noqa: BLE001 - collected for the caller's assertion
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors
