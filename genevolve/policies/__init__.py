"""Policies by spec string: ``planner`` · ``nano`` · ``hf:<id-or-path>[?4bit=1&adapter=<path>]`` ·
``openai:<model>@<base_url>`` · ``replay:<file>``. Each backend is imported only when asked for."""

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

        return ReplayPolicy(s.target)
    if s.kind == "openai":
        from genevolve.policies.openai import OpenAIPolicy

        return OpenAIPolicy(model=s.target, base_url=s.base_url, **kwargs)
    if s.kind in ("hf", "nano"):
        from genevolve.policies.local import LocalPolicy

        return LocalPolicy.from_spec(s, **kwargs)
    raise ValueError(f"unknown policy spec '{spec}': use planner, nano, hf:<id-or-path>, "
                     "openai:<model>@<base_url> or replay:<file>")
