"""Policies by spec string: ``planner`` · ``nano`` · ``hf:<id-or-path>[?4bit=1&adapter=<path>]`` ·
``openai:<model>@<base_url>`` · ``replay:<file>``. Each backend is imported only when asked for.

Sampling is settable on any generating spec: ``?temperature=0.6&top_p=0.9&max_tokens=4096``
(``openai:m@http://host/v1?temperature=0.6`` keeps the base URL clean). What a spec leaves out
comes from the protocol profile (official: 0.6 / 0.9 / 4096), else the backend's own default."""

from __future__ import annotations

from genevolve.config import parse_spec
from genevolve.policies.base import Policy, PolicyError, complete

__all__ = ["Policy", "PolicyError", "complete", "make_policy"]


def make_policy(spec: str, **kwargs) -> Policy:
    s = parse_spec(spec)
    if s.kind == "planner":
        from genevolve.policies.planner import PlannerPolicy

        return PlannerPolicy(**kwargs)
    if s.kind == "replay":
        from genevolve.policies.replay import ReplayPolicy

        return ReplayPolicy(s.target, record=s.params.get("id"))
    if s.kind == "openai":
        from genevolve.policies.openai import OpenAIPolicy

        return OpenAIPolicy(model=s.target, base_url=s.base_url, **{**_spec_sampling(s), **kwargs})
    if s.kind in ("hf", "nano"):
        from genevolve.policies.local import LocalPolicy

        sampling = _spec_sampling(s)
        for key in ("temperature", "top_p", "max_tokens"):
            s.params.pop(key, None)
        if "max_tokens" in sampling:
            sampling["max_new_tokens"] = sampling.pop("max_tokens")
        policy = LocalPolicy.from_spec(s, **{**sampling, **kwargs})
        policy.explicit_sampling = set(sampling) | {k for k in kwargs if k in ("temperature", "top_p", "max_new_tokens")}
        return policy
    raise ValueError(f"unknown policy spec '{spec}': use planner, nano, hf:<id-or-path>, "
                     "openai:<model>@<base_url> or replay:<file>")


def _spec_sampling(s) -> dict:
    """?temperature=&top_p=&max_tokens= from any policy spec (for openai, also after the base URL)."""
    from genevolve.config import sampling_params

    return sampling_params(s.params, s.raw)
