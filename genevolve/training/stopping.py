"""A clean stop on SIGTERM/SIGINT: the trainer finishes its step, checkpoints, and exits 0."""

from __future__ import annotations

import signal
import threading


class GracefulStop:
    """SIGTERM/SIGINT set a flag; the trainer checkpoints at the end of the step and exits 0.

    The studio starts trainers as subprocesses and stops them with SIGTERM; a stop mid-step
    must never leave a half-written checkpoint.
    """

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second signal: give up waiting
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
