"""The tool interface: ``Tool.__call__(args, ctx) -> ToolResult``.

A tool never raises into the agent loop for bad arguments or a failed backend; it returns a
ToolResult with ``error`` set and a text the model can read and act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genevolve.trajectory import ImageRef, ImageRegistry


@dataclass
class ToolResult:
    text: str
    images: list[ImageRef] = field(default_factory=list)
    backend: str | None = None  # which backend answered (web, serper, local, cache...)
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ToolContext:
    """What a tool may touch during one trajectory."""

    registry: ImageRegistry
    work_dir: Path  # per-trajectory folder for downloaded images
    offline: bool = True
    user_images: list[ImageRef] = field(default_factory=list)
    request: str = ""
    profile: Any = None  # the protocol Profile the run speaks (genevolve.profiles); None: the default


def clip(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters, cut at a word with "…" when shortened."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",.;:—-") + "…"


class ToolArgumentError(ValueError):
    """Arguments the model sent do not fit the tool; the message is shown to the model."""


def distinct_queries(raw: list[str]) -> list[str]:
    """The queries with whitespace collapsed, empty ones and case-insensitive repeats dropped, in order."""
    queries: list[str] = []
    for q in raw:
        q = " ".join(q.split())
        if q and q.lower() not in (x.lower() for x in queries):
            queries.append(q)
    return queries


def top_k_arg(args: dict, *, default: int, cap: int, shape: str) -> int:
    """``args["top_k"]`` (a positive integer, digits in a string accepted) capped at ``cap``; ``shape``
    ends the error message with how to call the tool."""
    top_k = args.get("top_k", default)
    if isinstance(top_k, str) and top_k.strip().isdigit():
        top_k = int(top_k)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ToolArgumentError(f"top_k must be a positive integer. {shape}")
    return min(top_k, cap)


class Tool:
    """A tool the policy can call. ``answer`` is its reply in our conversation; a tool the official
    runtime also has words that reply its way in ``answer_official``. Which one runs is the
    conversation profile's choice (``Profile.answer_tool``), never the tool's."""

    name: str = ""
    description: str = ""

    def __call__(self, args: dict, ctx: ToolContext | None = None) -> ToolResult:
        from genevolve.profiles import profile_of

        return profile_of(ctx).answer_tool(self, args, ctx)

    def answer(self, args: dict, ctx: ToolContext | None) -> ToolResult:  # pragma: no cover - interface
        raise NotImplementedError

    def answer_official(self, args: dict, ctx: ToolContext | None) -> ToolResult:
        raise NotImplementedError(f"the official runtime has no {self.name or type(self).__name__} tool")
