"""Remote calls with a wall-clock deadline for the whole answer and a cap on its size.

httpx's timeouts bound each socket operation, so a server that sends a byte every half second
never trips them; and ``response.json()`` reads a body of any size. ``post_json`` bounds both: the
request runs in a worker the caller waits for at most ``deadline_s`` (then the client is closed
under it), the body is read in chunks and refused past ``max_bytes``, and redirects are never
followed (a 3xx would re-send the prompt and images to wherever it points).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field


class RemoteError(RuntimeError):
    """A remote call that gave no usable answer; ``retryable`` when trying again may help."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


@dataclass
class Reply:
    """What came back: status, headers and the whole (capped) body."""

    status_code: int
    content: bytes
    headers: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


def post_json(url: str, payload: dict, *, headers: dict | None = None, timeout_s: float, deadline_s: float,
              max_bytes: int, trust_env: bool = True) -> Reply:
    """POST ``payload`` as JSON; the whole answer within ``deadline_s`` and ``max_bytes``, or RemoteError."""
    import httpx

    client = httpx.Client(timeout=httpx.Timeout(min(timeout_s, deadline_s)), follow_redirects=False,
                          trust_env=trust_env)  # trust_env: proxies from the environment, as httpx.post had
    outcome: dict = {}
    stop_at = time.monotonic() + deadline_s

    def call() -> None:
        try:
            with client.stream("POST", url, json=payload, headers=headers or {}) as resp:
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise RemoteError(f"{url} answered {int(declared):,} bytes, over the {max_bytes:,}-byte cap")
                buf = bytearray()
                for chunk in resp.iter_bytes(65536):
                    buf.extend(chunk)
                    if len(buf) > max_bytes:
                        raise RemoteError(f"{url} answered more than the {max_bytes:,}-byte cap")
                    if time.monotonic() > stop_at:
                        raise RemoteError(f"{url} sent no complete answer within {deadline_s:g} s", retryable=True)
                outcome["reply"] = Reply(resp.status_code, bytes(buf), dict(resp.headers))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=call, name="genevolve-remote", daemon=True)
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive():
        # Closing may wait on the pool; the caller does not wait for it. The worker's next socket
        # operation fails and it ends.
        threading.Thread(target=client.close, name="genevolve-remote-close", daemon=True).start()
        raise RemoteError(f"{url} sent no complete answer within {deadline_s:g} s", retryable=True)
    client.close()
    error = outcome.get("error")
    if isinstance(error, RemoteError):
        raise error
    if isinstance(error, httpx.TimeoutException):
        raise RemoteError(f"{url} timed out ({type(error).__name__} after {timeout_s:g} s)", retryable=True)
    if isinstance(error, httpx.HTTPError):
        raise RemoteError(f"{url}: {type(error).__name__}: {error}", retryable=True)
    if error is not None:
        raise error
    reply = outcome["reply"]
    if 300 <= reply.status_code < 400:
        raise RemoteError(f"{url} answered a redirect (HTTP {reply.status_code}) to "
                          f"{reply.headers.get('location', '?')}; redirects are not followed: use the final URL")
    return reply
