"""Protocol profiles: the exact conversation a policy is spoken to in.

A model trained on one conversation shape and served another loses quality silently, so the
shape is a named, recorded choice rather than scattered constants:

* ``genevolve`` (default) — our system prompt, our markdown tool replies, full skill texts.
* ``nano`` — a compact variant of ours for the 270M nano policy, whose context is small: a short
  system prompt, at most 2 search hits and 3 images per call with short snippets and no source
  lines, and each skill in its short form. A planner trajectory fits 2,048 tokens at p95.
* ``official[:<path>]`` — the conversation the released checkpoint was trained on. Its system
  prompt, final-step message and skill texts are read at run time from the user's copy of the
  official release (``genevolve.official.assets``); its reply formats, nudges, answer resolution,
  termination names and sampling defaults follow the official runtime (``genevolve.official.turns``).

The turn grammar (``<think>``, ``<tool_call>``, ``<answer>``, ``<tool_response>``) is the same
in every profile; a profile changes only the wording the runtime sends. Every trajectory records
the profile it ran under (``trajectory.meta["protocol"]``).

A profile is a dialect object: it owns every way its conversation differs, and the agent loop and
the tools ask it rather than test a flag. The loop asks how the request goes out
(``request_message``), when the last round is announced (``is_final_round``,
``answers_after_a_repeated_call``), which step a parsed
turn leads to (``route``), how tool failures and endings are worded (``unknown_tool_text``,
``tool_error_text``, ``termination``); a tool asks which of its answers to give (``answer_tool``:
``Tool.answer`` for ours, ``Tool.answer_official`` for the official runtime's replies), and the
tool cache how to key and number what it stores (``cache_context``, ``numbers_images_by_location``,
``reads_arguments_strictly``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

DEFAULT_PROFILE = "genevolve"
# Our profiles leave sampling to each backend's own defaults (openai: 0.7, 2048 tokens, stop at the
# end of the action; local: greedy); the official one sets its own. A policy spec's
# ?temperature=&top_p=&max_tokens= overrides any of them.
OUR_SAMPLING: dict = {}


@dataclass(frozen=True)
class Profile:
    name: str
    prompt_file: str  # under genevolve/prompts/
    compact_replies: bool = False  # tools word their replies in the short form
    search_top_k_cap: int | None = None  # the most hits per search query the model is shown
    image_top_k_cap: int | None = None  # the most images per image_search query
    snippet_chars: int | None = None  # search snippet length; None: the tool's own default
    short_skills: bool = False  # query_knowledge returns each skill's short form
    sampling: dict = field(default_factory=lambda: dict(OUR_SAMPLING), compare=False, hash=False)
    text_only: bool = False  # tool replies carry no images, as in the official runtime

    def system_prompt(self, override_path: str | Path | None = None) -> str:
        """The profile's system prompt, or the user's file in its place."""
        if override_path is not None:
            from genevolve.protocol import load_system_prompt

            return load_system_prompt(override_path)
        return resources.files("genevolve").joinpath(f"prompts/{self.prompt_file}").read_text(encoding="utf-8")

    def cap_top_k(self, tool: str, top_k: int) -> int:
        cap = {"search": self.search_top_k_cap, "image_search": self.image_top_k_cap}.get(tool)
        return min(top_k, cap) if cap else top_k

    def final_message(self) -> str:
        """The user message that opens the last round."""
        from genevolve.protocol import FINAL_ROUND_MESSAGE

        return FINAL_ROUND_MESSAGE

    def tool_response(self, text: str) -> str:
        from genevolve.protocol import format_tool_response

        return format_tool_response(text)

    def finish_turn(self, text: str) -> str:
        """The assistant text kept in the conversation (models may run on past their action)."""
        from genevolve.protocol import truncate_at_turn_end

        return truncate_at_turn_end(text)

    def parse_turn(self, text: str):
        from genevolve.protocol import parse_turn

        return parse_turn(text)

    @property
    def spec(self) -> str:
        """What to pass as --protocol to get this profile again."""
        return self.name

    # ---------------------------------------------------------------- the loop asks

    def request_message(self, request: str, user_images: str | None) -> str:
        """The first user message: the request, and a line naming the user's images (``user_images``:
        "IMG_001 (title), …", or None when there are none)."""
        if not user_images:
            return request
        from genevolve.protocol import user_images_note

        return request + user_images_note(user_images)

    # A tool call made again word for word is a loop (a small model asked image_search "bike" ten
    # times with the motorcycle it wanted already shown): the next round is then the last. The
    # teacher never repeats a call, so no training record meets this rule.
    answers_after_a_repeated_call = True

    def is_final_round(self, rnd: int, tool_calls: int, max_rounds: int, max_tool_calls: int) -> bool:
        """Whether round ``rnd`` is announced as the last: at the round cap, or once the tool budget is spent."""
        return rnd == max_rounds or tool_calls >= max_tool_calls

    def route(self, kind: str, final: bool) -> str:
        """The step a parsed turn of ``kind`` (tool_call, answer, error) leads to: ``tool_call``,
        ``answer``, ``format_error``, or ``late_tool_call`` (a tool call after the last round was announced)."""
        if kind == "tool_call":
            return "late_tool_call" if final else "tool_call"
        return "format_error" if kind == "error" else "answer"

    def termination(self, ending: str) -> str:
        """The stored name of an ending (``policy_error``, ``max_rounds``) in this conversation."""
        return ending

    def unknown_tool_text(self, name: str, known: list[str]) -> str:
        return f"Unknown tool '{name}'. Available tools: {', '.join(sorted(known))}."

    def tool_error_text(self, name: str, exc: BaseException) -> str:
        return f"The {name} tool failed: {type(exc).__name__}: {exc}"

    def trajectory_meta(self) -> dict:
        """What a trajectory records about this profile besides its name."""
        return {}

    # ---------------------------------------------------------------- the tools ask

    def answer_tool(self, tool, args: dict, ctx):
        """The tool's answer in this conversation's words."""
        return tool.answer(args, ctx)

    numbers_images_by_location = False  # one id per picture (by content); the official runtime: per URL
    reads_arguments_strictly = False  # two spellings of one question are one cache entry

    def cache_context(self, tool_name: str, args: dict) -> dict:
        """What a cached tool reply depends on besides its arguments: replies are worded per profile
        (the default keeps the keys it always had)."""
        return {} if self.name == DEFAULT_PROFILE else {"profile": self.name}


@dataclass(frozen=True)
class OfficialProfile(Profile):
    """The released checkpoint's conversation; texts from the user's copy of the official release."""

    assets: Any = None  # genevolve.official.assets.OfficialAssets
    source: str | None = None  # the path given after "official:", if any

    def system_prompt(self, override_path: str | Path | None = None) -> str:
        if override_path is not None:
            return super().system_prompt(override_path)
        return self.assets.system_prompt

    def final_message(self) -> str:
        return self.assets.final_step_message

    def tool_response(self, text: str) -> str:
        from genevolve.official.turns import tool_response

        return tool_response(text)

    def finish_turn(self, text: str) -> str:
        return text.strip()  # no stop strings, no cutting: the whole reply, stripped

    def parse_turn(self, text: str):
        from genevolve.official.turns import parse_turn

        return parse_turn(text)

    @property
    def spec(self) -> str:
        return f"official:{self.source}" if self.source else "official"

    # The official runtime takes no user images: its request goes out as typed, and the user's
    # images reach the model only as image_search results.
    def request_message(self, request: str, user_images: str | None) -> str:
        return request

    # It announces only the round cap (its prompt states the tool budget) and runs a repeated call.
    def is_final_round(self, rnd: int, tool_calls: int, max_rounds: int, max_tool_calls: int) -> bool:
        return rnd == max_rounds

    answers_after_a_repeated_call = False

    # A tool call is always run; anything else goes through its answer rules and nudges.
    def route(self, kind: str, final: bool) -> str:
        return "tool_call" if kind == "tool_call" else "official_answer"

    def termination(self, ending: str) -> str:
        return {"policy_error": "error", "max_rounds": "max_rounds_reached"}.get(ending, ending)

    def unknown_tool_text(self, name: str, known: list[str]) -> str:
        from genevolve.official.turns import unknown_tool

        return unknown_tool(name)

    def tool_error_text(self, name: str, exc: BaseException) -> str:
        from genevolve.official.turns import tool_error

        return tool_error(name, exc)

    def trajectory_meta(self) -> dict:
        return {"protocol_assets": str(self.assets.package_dir)}

    def answer_tool(self, tool, args: dict, ctx):
        return tool.answer_official(args, ctx)

    numbers_images_by_location = True
    reads_arguments_strictly = True

    def cache_context(self, tool_name: str, args: dict) -> dict:
        # Its replies echo the arguments verbatim: key on them exactly; its skill texts come from
        # the user's copy, so a new copy must not be served old texts.
        context = {"profile": self.name, "exact_args": args}
        if tool_name == "query_knowledge":
            context["skills"] = self.assets.digest
        return context


# The official runtime's sampling: no stop strings, the model ends its own turn.
OFFICIAL_SAMPLING = {"temperature": 0.6, "top_p": 0.9, "max_tokens": 4096, "stop_at_turn_end": False}


def official_profile(path: str | None = None) -> OfficialProfile:
    """The official profile with texts from ``path`` (a checkout or installed copy; None: look for one)."""
    from genevolve.official.assets import OfficialAssetsError, load

    try:
        assets = load(path)
    except OfficialAssetsError as exc:
        raise ProfileError(str(exc)) from exc
    return OfficialProfile("official", "", sampling=dict(OFFICIAL_SAMPLING), text_only=True,
                           assets=assets, source=path or None)


PROFILES: dict[str, Profile] = {
    "genevolve": Profile("genevolve", "system.md"),
    "nano": Profile("nano", "system_nano.md", compact_replies=True, search_top_k_cap=2, image_top_k_cap=3,
                    snippet_chars=200, short_skills=True),
}


class ProfileError(ValueError):
    """An unknown or unusable protocol profile; the message lists the valid ones."""


def get_profile(spec: str | Profile | None = None) -> Profile:
    """``genevolve`` (default), ``nano``, ``official[:<path>]``, or a Profile already built."""
    if isinstance(spec, Profile):
        return spec
    raw = (spec or DEFAULT_PROFILE).strip()
    name, _, path = raw.partition(":")
    name = name.strip().lower()
    if name == "official":
        return official_profile(path.strip() or None)
    if name in PROFILES and not path:
        return PROFILES[name]
    raise ProfileError(f"unknown protocol profile {spec!r}; choose one of: {', '.join(PROFILES)}, "
                       "official[:/path/to/GenEvolve]")


def profile_of(ctx) -> Profile:
    """The profile a tool call runs under (tools may be called without a context)."""
    return getattr(ctx, "profile", None) or PROFILES[DEFAULT_PROFILE]
