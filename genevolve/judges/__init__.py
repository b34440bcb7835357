"""Judges by spec string: ``local`` · ``kscore:<model>@<base_url>`` · ``wise:<model>@<base_url>`` ·
``sufficiency[:<model>@<base_url>]``.

Remote specs take optional query parameters after the URL: ``?timeout=60&retries=5&rpm=30``.
The API key comes from GENEVOLVE_JUDGE_API_KEY, else GEMINI_API_KEY/GOOGLE_API_KEY for Google's
OpenAI-compatible endpoint, else OPENAI_API_KEY (``EMPTY`` for a local vLLM).
Every judge is thread-safe and returns ``Scores``; see base.py for the contract.
"""

from __future__ import annotations

from genevolve.judges.base import DIMENSIONS, METRICS, Judge, JudgeError, Scores, kscore_overall

__all__ = ["DIMENSIONS", "METRICS", "Judge", "JudgeError", "Scores", "kscore_overall", "make_judge"]


def make_judge(spec: str, **kwargs) -> Judge:
    """A judge from its spec. kwargs go to the ChatEndpoint of remote judges (timeout_s,
    max_retries, backoff_s, rpm, api_key) or to the LocalJudge (ocr)."""
    from genevolve.config import parse_spec

    s = parse_spec(spec)
    if s.kind == "local":
        from genevolve.judges.local import LocalJudge

        return LocalJudge(**kwargs)
    if s.kind == "sufficiency":
        from genevolve.judges.sufficiency import SufficiencyJudge

        if not s.target:
            return SufficiencyJudge(spec=spec)
        from genevolve.judges.base import endpoint_from_spec

        return SufficiencyJudge(endpoint_from_spec(s, **kwargs), spec=spec)
    if s.kind in ("kscore", "wise"):
        if not s.target or not s.base_url:
            raise ValueError(f"judge spec '{spec}' needs a model and an endpoint: {s.kind}:<model>@<base_url> "
                             f"(e.g. {s.kind}:gemini-2.5-flash@https://generativelanguage.googleapis.com/v1beta/openai/)")
        from genevolve.judges.base import endpoint_from_spec

        endpoint = endpoint_from_spec(s, **kwargs)
        if s.kind == "kscore":
            from genevolve.judges.kscore import KScoreJudge

            return KScoreJudge(endpoint, spec=spec)
        from genevolve.judges.wise import WiseJudge

        return WiseJudge(endpoint, spec=spec)
    raise ValueError(f"unknown judge spec '{spec}': use local, kscore:<model>@<base_url>, "
                     "wise:<model>@<base_url> or sufficiency[:<model>@<base_url>]")
