"""Protocol profiles: the exact conversation a policy is spoken to in.

A model trained on one conversation shape and served another loses quality silently, so the
shape is a named, recorded choice rather than scattered constants:

* ``genevolve`` (default) — our system prompt, our markdown tool replies, full skill texts.
* ``nano`` — a compact variant of ours for the 270M nano policy, whose context is small: a short
  system prompt, at most 2 search hits and 3 images per call with short snippets and no source
  lines, and each skill in its short form. A planner trajectory fits 2,048 tokens at p95.

The turn grammar (``<think>``, ``<tool_call>``, ``<answer>``, ``<tool_response>``) is the same
in every profile; a profile changes only the wording the runtime sends. Every trajectory records
the profile it ran under (``trajectory.meta["protocol"]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

DEFAULT_PROFILE = "genevolve"


@dataclass(frozen=True)
class Profile:
    name: str
    prompt_file: str  # under genevolve/prompts/
    compact_replies: bool = False  # tools word their replies in the short form
    search_top_k_cap: int | None = None  # the most hits per search query the model is shown
    image_top_k_cap: int | None = None  # the most images per image_search query
    snippet_chars: int | None = None  # search snippet length; None: the tool's own default
    short_skills: bool = False  # query_knowledge returns each skill's short form

    def system_prompt(self, override_path: str | Path | None = None) -> str:
        """The profile's system prompt, or the user's file in its place."""
        if override_path is not None:
            from genevolve.protocol import load_system_prompt

            return load_system_prompt(override_path)
        return resources.files("genevolve").joinpath(f"prompts/{self.prompt_file}").read_text(encoding="utf-8")

    def cap_top_k(self, tool: str, top_k: int) -> int:
        cap = {"search": self.search_top_k_cap, "image_search": self.image_top_k_cap}.get(tool)
        return min(top_k, cap) if cap else top_k


PROFILES: dict[str, Profile] = {
    "genevolve": Profile("genevolve", "system.md"),
    "nano": Profile("nano", "system_nano.md", compact_replies=True, search_top_k_cap=2, image_top_k_cap=3,
                    snippet_chars=200, short_skills=True),
}


class ProfileError(ValueError):
    """An unknown or unusable protocol profile; the message lists the valid ones."""


def get_profile(spec: str | Profile | None = None) -> Profile:
    """``genevolve`` (default), ``nano``, or a Profile already built."""
    if isinstance(spec, Profile):
        return spec
    name = (spec or DEFAULT_PROFILE).strip().lower()
    if name in PROFILES:
        return PROFILES[name]
    raise ProfileError(f"unknown protocol profile {spec!r}; choose one of: {', '.join(PROFILES)}")


def profile_of(ctx) -> Profile:
    """The profile a tool call runs under (tools may be called without a context)."""
    return getattr(ctx, "profile", None) or PROFILES[DEFAULT_PROFILE]
