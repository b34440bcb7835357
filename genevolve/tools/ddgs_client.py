"""The ddgs metasearch client that text search and image search both call (no key needed).

Every failure is a ``BackendUnavailable``, so the calling tool falls back to its local backend;
"no results" is an empty list, not a failure.
"""

from __future__ import annotations

from genevolve.tools.circuit import BackendUnavailable


def ddgs_rows(kind: str, query: str, top_k: int, *, timeout: float, proxy: str | None, region: str,
              label: str = "ddgs") -> list[dict]:
    """The rows of ``DDGS().text(...)`` (``kind="text"``) or ``DDGS().images(...)`` for ``query``.

    ``label`` starts the error message ("ddgs", "ddgs images"): it is what a fallback note shows.
    """
    from ddgs import DDGS
    from ddgs.exceptions import DDGSException

    try:
        client = DDGS(proxy=proxy, timeout=int(max(1, timeout)))
        return getattr(client, kind)(query, max_results=top_k, region=region)
    except DDGSException as exc:
        if "no results" in str(exc).lower():
            return []
        raise BackendUnavailable(f"{label}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any transport problem means: fall back
        raise BackendUnavailable(f"{label}: {type(exc).__name__}: {exc}") from exc
