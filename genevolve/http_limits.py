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


class DeadlineExceeded(Exception):
    """``call_within``'s worker did not finish in time."""


def call_within(work, *, seconds: float, client, name: str):
    """``work()`` with a wall-clock limit: per-operation timeouts never fire on a server that sends
    a byte every second, so the work runs in a worker the caller waits for at most ``seconds``.
    At the limit the ``client`` is closed under it (its next socket operation fails and it ends;
    the caller does not wait for the close) and DeadlineExceeded is raised. Otherwise the client is
    closed and work's result returned, or its exception raised."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        threading.Thread(target=client.close, name=f"{name}-close", daemon=True).start()
        raise DeadlineExceeded(name)
    client.close()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def post_json(url: str, payload: dict, *, headers: dict | None = None, timeout_s: float, deadline_s: float,
              max_bytes: int, trust_env: bool = True) -> Reply:
    """POST ``payload`` as JSON; the whole answer within ``deadline_s`` and ``max_bytes``, or RemoteError."""
    import httpx

    client = httpx.Client(timeout=httpx.Timeout(min(timeout_s, deadline_s)), follow_redirects=False,
                          trust_env=trust_env)  # trust_env: proxies from the environment, as httpx.post had
    stop_at = time.monotonic() + deadline_s

    def call() -> Reply:
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
            return Reply(resp.status_code, bytes(buf), dict(resp.headers))

    try:
        reply = call_within(call, seconds=deadline_s, client=client, name="genevolve-remote")
    except DeadlineExceeded:
        raise RemoteError(f"{url} sent no complete answer within {deadline_s:g} s", retryable=True) from None
    except httpx.TimeoutException as error:
        raise RemoteError(f"{url} timed out ({type(error).__name__} after {timeout_s:g} s)", retryable=True) from error
    except httpx.HTTPError as error:
        raise RemoteError(f"{url}: {type(error).__name__}: {error}", retryable=True) from error
    if 300 <= reply.status_code < 400:
        raise RemoteError(f"{url} answered a redirect (HTTP {reply.status_code}) to "
                          f"{reply.headers.get('location', '?')}; redirects are not followed: use the final URL")
    return reply
