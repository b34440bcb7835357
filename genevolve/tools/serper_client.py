"""The Serper-compatible JSON API client that text search and image search both call.

``SERPER_API_KEY`` enables it (see ``genevolve.tools.build_tools``); ``SERPER_BASE_URL``
overrides the host, which is how tests point it at a server on 127.0.0.1. Every failure is a
``BackendUnavailable``, so the calling tool falls back to its local backend.
"""

from __future__ import annotations

import os

from genevolve.tools.circuit import BackendUnavailable


def serper_base_url() -> str:
    return os.environ.get("SERPER_BASE_URL", "https://google.serper.dev").rstrip("/")


def serper_post(endpoint: str, payload: dict, *, api_key: str, base_url: str, timeout: float) -> dict:
    """POST ``payload`` to ``{base_url}/{endpoint}``; the JSON object it answers, or BackendUnavailable."""
    from genevolve.http_limits import RemoteError, post_json

    try:
        # A search answer is a few kB: the whole of it within 3 x timeout and 4 MB, no redirects.
        r = post_json(f"{base_url}/{endpoint}", payload, timeout_s=timeout, deadline_s=3 * timeout,
                      max_bytes=4 * 1024 * 1024, headers={"X-API-KEY": api_key, "Content-Type": "application/json"},
                      trust_env=False)
    except RemoteError as exc:
        raise BackendUnavailable(f"serper: {exc}") from exc
    if r.status_code != 200:
        raise BackendUnavailable(f"serper: HTTP {r.status_code}: {r.text[:200]}")
    try:
        data = r.json()
    except ValueError as exc:
        raise BackendUnavailable("serper: the answer was not JSON") from exc
    if not isinstance(data, dict):
        raise BackendUnavailable("serper: unexpected answer shape")
    return data
