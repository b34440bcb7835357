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
    import httpx

    try:
        r = httpx.post(f"{base_url}/{endpoint}", json=payload, timeout=timeout, trust_env=False,
                       headers={"X-API-KEY": api_key, "Content-Type": "application/json"})
    except httpx.HTTPError as exc:
        raise BackendUnavailable(f"serper: {type(exc).__name__}: {exc}") from exc
    if r.status_code != 200:
        raise BackendUnavailable(f"serper: HTTP {r.status_code}: {r.text[:200]}")
    try:
        data = r.json()
    except ValueError as exc:
        raise BackendUnavailable("serper: the answer was not JSON") from exc
    if not isinstance(data, dict):
        raise BackendUnavailable("serper: unexpected answer shape")
    return data
