"""Judges by spec string: ``local`` · ``kscore:<model>@<base_url>`` · ``wise:<model>@<base_url>`` ·
``sufficiency[:<model>@<base_url>]``.

Remote specs take optional query parameters after the URL (``chat_endpoint.EndpointOptions``):
``?timeout=60&retries=5&rpm=30&max_tokens=2048&temperature=0``; KScore also
``&image_side=4096&rubric=<file or official:/path/to/GenEvolve>&asks=20`` (``kscore.KScoreOptions``; or the
settings ``judge_max_tokens``, ``judge_image_side``, ``judge_rubric``). Any other key is an error
that names the accepted ones.
The API key comes from GENEVOLVE_JUDGE_API_KEY, else GEMINI_API_KEY/GOOGLE_API_KEY for Google's
OpenAI-compatible endpoint, else OPENAI_API_KEY (``EMPTY`` for a local vLLM).
Every judge is thread-safe and returns ``Scores``; see base.py for the contract.
"""

from __future__ import annotations

from genevolve.judges.base import DIMENSIONS, METRICS, Judge, JudgeError, Scores, kscore_overall

__all__ = ["DIMENSIONS", "METRICS", "Judge", "JudgeError", "Scores", "kscore_overall", "make_judge"]


def make_judge(spec: str, settings=None, **kwargs) -> Judge:
    """A judge from its spec. kwargs go to the ChatEndpoint of remote judges (timeout_s,
    max_retries, backoff_s, rpm, api_key) or to the LocalJudge (ocr). ``settings`` (default: the
    environment's) may name a KScore rubric, max_tokens and image size."""
    from genevolve.specs import NoOptions, parse_spec, read_options

    s = parse_spec(spec)
    if s.kind == "local":
        from genevolve.judges.local import LocalJudge

        read_options(NoOptions, s.params, backend="local")
        return LocalJudge(**kwargs)
    if s.kind == "sufficiency":
        from genevolve.judges.sufficiency import SufficiencyJudge

        if not s.target:
            read_options(NoOptions, s.params, backend="sufficiency (offline)")
            return SufficiencyJudge(spec=spec)
        from genevolve.judges.chat_endpoint import endpoint_from_spec

        return SufficiencyJudge(endpoint_from_spec(s, **kwargs), spec=spec)
    if s.kind in ("kscore", "wise"):
        if not s.target or not s.base_url:
            raise ValueError(f"judge spec '{spec}' needs a model and an endpoint: {s.kind}:<model>@<base_url> "
                             f"(e.g. {s.kind}:gemini-2.5-flash@https://generativelanguage.googleapis.com/v1beta/openai/)")
        from genevolve.judges.chat_endpoint import endpoint_from_spec, endpoint_options

        if s.kind == "kscore":
            from genevolve.judges.kscore import KScoreJudge, KScoreOptions, is_official_rubric, load_rubric

            # Rubric, max_tokens and image size: the spec (?rubric=&max_tokens=&image_side=), else
            # settings (judge_rubric / judge_max_tokens / judge_image_side), else ours.
            opts = endpoint_options(s, KScoreOptions)
            conf = _judge_settings(settings)
            rubric = opts.rubric or conf.get("judge_rubric")
            official = is_official_rubric(rubric)  # the official evaluator's whole call, not just its text
            max_tokens = opts.max_tokens or conf.get("judge_max_tokens") or (8192 if official else None)
            if max_tokens:
                kwargs.setdefault("max_tokens", int(max_tokens))
            side = int(opts.image_side or conf.get("judge_image_side") or 1280)
            endpoint = endpoint_from_spec(s, opts, **kwargs)
            return KScoreJudge(endpoint, spec=spec, max_side=side, rubric=load_rubric(rubric) if rubric else None,
                               official=official, max_asks=opts.asks)
        endpoint = endpoint_from_spec(s, **kwargs)
        from genevolve.judges.wise import WiseJudge

        return WiseJudge(endpoint, spec=spec)
    raise ValueError(f"unknown judge spec '{spec}': use local, kscore:<model>@<base_url>, "
                     "wise:<model>@<base_url> or sufficiency[:<model>@<base_url>]")


def _judge_settings(settings) -> dict:
    if settings is None:
        from genevolve.config import Settings

        try:
            settings = Settings.load()
        except Exception:  # noqa: BLE001 - a broken environment variable must not hide the spec's own values
            return {}
    return {k: getattr(settings, k, None) for k in ("judge_rubric", "judge_max_tokens", "judge_image_side")}
