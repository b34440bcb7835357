"""The Serper-compatible JSON API client that text search and image search both call.

``SERPER_API_KEY`` enables it (see ``genevolve.tools.build_tools``); ``SERPER_BASE_URL``
overrides the host, which is how tests point it at a server on 127.0.0.1. Every failure is a
``BackendUnavailable``, so the calling tool falls back to its local backend.

Under the official protocol profile the request is retried as the official runtime retries it
(``OFFICIAL_RETRY``): the model then sees the same failure text after the same wait.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from genevolve.tools.circuit import BackendUnavailable


@dataclass(frozen=True)
class SerperRetry:
    """How often to ask, how long each try may take, and the waits between tries."""

    tries: int
    timeout: float
    backoff: tuple[float, ...]  # the wait after failed try n (the last value repeats)


# The official runtime: 3 tries, 30 s each, waiting 1 s then 3 s.
OFFICIAL_RETRY = SerperRetry(tries=3, timeout=30.0, backoff=(1.0, 3.0))


def serper_base_url() -> str:
    return os.environ.get("SERPER_BASE_URL", "https://google.serper.dev").rstrip("/")


# Ours asks once more, after OUR_RETRY_WAIT_S, when the service answered that it is busy or
# broken for a moment; a timeout or a refused connection is not retried (the circuit breaker
# and the local fallback handle a network that is down, without doubling the wait).
OUR_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
OUR_RETRY_WAIT_S = 1.0


def serper_post(endpoint: str, payload: dict, *, api_key: str, base_url: str, timeout: float) -> dict:
    """POST ``payload`` to ``{base_url}/{endpoint}``; the JSON object it answers, or BackendUnavailable."""
    from genevolve.http_limits import RemoteError, post_json

    for attempt in (1, 2):
        try:
            # A search answer is a few kB: the whole of it within 3 x timeout and 4 MB, no redirects.
            r = post_json(f"{base_url}/{endpoint}", payload, timeout_s=timeout, deadline_s=3 * timeout,
                          max_bytes=4 * 1024 * 1024,
                          headers={"X-API-KEY": api_key, "Content-Type": "application/json"}, trust_env=False)
        except RemoteError as exc:
            raise BackendUnavailable(f"serper: {exc}") from exc
        if r.status_code not in OUR_RETRY_STATUS or attempt == 2:
            break
        time.sleep(OUR_RETRY_WAIT_S)
    if r.status_code != 200:
        raise BackendUnavailable(f"serper: HTTP {r.status_code}: {r.text[:200]}")
    try:
        data = r.json()
    except ValueError as exc:
        raise BackendUnavailable("serper: the answer was not JSON") from exc
    if not isinstance(data, dict):
        raise BackendUnavailable("serper: unexpected answer shape")
    return data


def serper_post_official(endpoint: str, payload: dict, *, api_key: str, base_url: str,
                         retry: SerperRetry = OFFICIAL_RETRY, sleep=time.sleep):
    """The official runtime's request: retried per ``retry``; any status below 400 is an answer.

    The final failure reads ``Serper /<endpoint> failed after N retries: <last error>``, an HTTP
    error worded as the ``requests`` library words it, since that text reaches the model.
    """
    import httpx

    url = f"{base_url}/{endpoint}"
    last = ""
    for attempt in range(retry.tries):
        try:
            r = httpx.post(url, json=payload, timeout=retry.timeout, trust_env=False,
                           headers={"X-API-KEY": api_key, "Content-Type": "application/json"})
            if r.status_code >= 400:
                kind = "Client" if r.status_code < 500 else "Server"
                raise BackendUnavailable(f"{r.status_code} {kind} Error: {r.reason_phrase} for url: {r.url}")
            return r.json()
        except (httpx.HTTPError, BackendUnavailable, ValueError) as exc:
            last = str(exc)
        if attempt + 1 < retry.tries:
            sleep(retry.backoff[min(attempt, len(retry.backoff) - 1)])
    raise BackendUnavailable(f"Serper /{endpoint} failed after {retry.tries} retries: {last}")
