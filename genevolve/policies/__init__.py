"""Policies by spec string: ``planner`` · ``nano`` · ``hf:<id-or-path>[?4bit=1&adapter=<path>]`` ·
``openai:<model>@<base_url>`` · ``replay:<file>``. Each backend is imported only when asked for.

Sampling is settable on any generating spec: ``?temperature=0.6&top_p=0.9&max_tokens=4096``
(``openai:m@http://host/v1?temperature=0.6`` keeps the base URL clean); ``openai:…?stream=0`` asks
for whole replies with the request body the openai SDK sends. What a spec leaves out
comes from the protocol profile (official: 0.6 / 0.9 / 4096), else the backend's own default."""

from __future__ import annotations

from dataclasses import dataclass

from genevolve.policies.base import Policy, PolicyError, complete
from genevolve.specs import SamplingOptions, param, parse_spec, read_options

__all__ = ["Policy", "PolicyError", "check_policy_spec", "complete", "make_policy"]


@dataclass
class OpenAIOptions(SamplingOptions):
    stream: bool = param(True, "0: ask for each reply whole; the request body then has no stream field, "
                               "exactly as the openai SDK (and the official runtime) sends it.")


@dataclass
class PlannerOptions:
    verdicts: bool = param(False, "Open the turn after each image_search reply with a verdict on its "
                                  "pictures, and name bound ids before the tally (teacher data; "
                                  "docs/bench/programs.md says what a student learned from it).")


@dataclass
class ReplayOptions:
    id: str | None = param(None, "The record to replay when the file holds several (an official results.json).")


def make_policy(spec: str, **kwargs) -> Policy:
    s = parse_spec(spec)
    if s.kind == "planner":
        from genevolve.policies.planner import PlannerPolicy

        options = read_options(PlannerOptions, s.params, backend="planner")
        return PlannerPolicy(**{"verdicts": options.verdicts, **kwargs})
    if s.kind == "replay":
        from genevolve.policies.replay import ReplayPolicy

        return ReplayPolicy(s.target, record=read_options(ReplayOptions, s.params, backend="replay").id)
    if s.kind == "openai":
        from genevolve.policies.openai import OpenAIPolicy

        options = read_options(OpenAIOptions, s.params, backend="openai")
        return OpenAIPolicy(model=s.target, base_url=s.base_url,
                            **{**options.given(), "stream": options.stream, **kwargs})
    if s.kind in ("hf", "nano"):
        from genevolve.policies.local import LocalPolicy

        return LocalPolicy.from_spec(s, **kwargs)
    raise ValueError(f"unknown policy spec '{spec}': use planner, nano, hf:<id-or-path>, "
                     "openai:<model>@<base_url> or replay:<file>")


POLICY_KINDS = ("planner", "nano", "hf", "openai", "replay")


def check_policy_spec(spec: str) -> None:
    """Raise ValueError when ``spec`` cannot name a policy (kind, target, options), without loading
    a model: for callers that build the policy later (bench workers) and must refuse it now."""
    from pathlib import Path

    s = parse_spec(spec)
    if s.kind not in POLICY_KINDS:
        raise ValueError(f"unknown policy spec '{spec}': use planner, nano, hf:<id-or-path>, "
                         "openai:<model>@<base_url> or replay:<file>")
    if s.kind == "planner":
        read_options(PlannerOptions, s.params, backend="planner")
    elif s.kind == "replay":
        read_options(ReplayOptions, s.params, backend="replay")
        if not s.target:
            raise ValueError("replay policy needs a trajectory file: replay:<file>")
        if not Path(s.target).is_file():
            raise ValueError(f"replay file not found: {s.target} (replay:<file> names a trajectory file)")
    elif s.kind == "openai":
        read_options(SamplingOptions, s.params, backend="openai")
        if not s.target:
            raise ValueError("openai policy needs a model: openai:<model>[@<base_url>]")
        if s.base_url and not s.base_url.lower().startswith(("http://", "https://")):
            raise ValueError(f"openai endpoint must be an http:// or https:// URL, got {s.base_url!r}")
    else:
        from genevolve.policies.local import LocalOptions

        read_options(LocalOptions, s.params, backend=s.kind)
        if s.kind == "hf" and not s.target:
            raise ValueError("hf policy needs a model: hf:<hub-id-or-local-path>")
