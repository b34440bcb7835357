"""The official runtime's turn handling, written here from its formats.

What the released checkpoint was trained against, as facts about the wire format:

* A turn is read answer-first: the first ``<answer>{…}</answer>`` whose body is strict JSON wins,
  even when the turn also holds a tool call; otherwise the first ``<tool_call>{…}</tool_call>``
  with strict JSON ``{"name", "arguments"}``. Anything else is a format error.
* A format error is answered with a one-line nudge wrapped in ``<tool_response>``; the run goes
  on until the round cap. In the last round (announced by the final-step message placed before
  that round's assistant turn) a turn without an answer ends the run.
* An answer's references are resolved against the images shown so far: unknown ids are dropped
  silently, the rest sorted by id and cut to the reference budget (at least one).
* Tool replies are plain text (no images attached), wrapped as ``<tool_response>\\n…\\n</tool_response>``
  and not rewritten in any way.

The reply wordings below are the one-line formats the model saw in training; they are protocol,
kept byte-exact so the conversation matches. Long texts (system prompt, final-step message,
skills) are never stored here; see ``genevolve.official.assets``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from genevolve.protocol import ToolCall, Turn

_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>\s*(\{.*?\})\s*</answer>", re.DOTALL)
_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)

# Termination names of the official runtime.
ANSWER, MAX_ROUNDS, NO_ANSWER, ERROR = "answer", "max_rounds_reached", "no_answer", "error"

FORMAT_NUDGE = ("Format error: must output one <tool_call>{...}</tool_call> "
                "or <answer>{...}</answer>.")
DEFAULT_TOP_K = 5  # search and image_search, when the call names no top_k


def tool_response(observation: str) -> str:
    return f"<tool_response>\n{observation}\n</tool_response>"


def format_nudge() -> str:
    return tool_response(FORMAT_NUDGE)


def _json_object(match) -> dict | None:
    """The JSON object a tag's match holds; None when there is no match or it is not an object."""
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_turn(text: str) -> Turn:
    """Read a turn the way the official runtime does: answer first, then one tool call, strict JSON."""
    think_m = _THINK_RE.search(text)
    think = think_m.group(1).strip() if think_m else ""
    answer = _json_object(_ANSWER_RE.search(text))
    if answer is not None:
        return Turn(kind="answer", think=think, answer=answer, raw=text)
    payload = _json_object(_TOOL_CALL_RE.search(text))
    args = (payload.get("arguments") or {}) if payload is not None else None
    if isinstance(args, dict):
        name = payload.get("name") or ""
        return Turn(kind="tool_call", think=think, raw=text, tool_call=ToolCall(str(name).strip(), args))
    return Turn(kind="error", think=think, raw=text,
                error="no <answer>{…}</answer> or <tool_call>{…}</tool_call> with valid JSON")


def resolve_answer(answer: dict, known: Iterable[str], max_references: int = 2) -> tuple[str, list[dict], list[str]]:
    """(gen_prompt, references, dropped ids): unknown ids dropped, sorted by id, cut to the budget."""
    gen_prompt = _text(answer.get("gen_prompt"))
    raw = answer.get("reference_images") or []
    if not isinstance(raw, list):
        raw = []
    known = set(known)
    refs, dropped = [], []
    for r in raw:
        if not isinstance(r, dict):
            continue
        img_id = _text(r.get("img_id"))
        if img_id not in known:
            dropped.append(img_id)
            continue
        refs.append({"img_id": img_id, "note": _text(r.get("note"))})
    refs.sort(key=lambda r: r["img_id"])
    return gen_prompt, refs[: max(1, int(max_references))], dropped


def _text(value: Any) -> str:
    if value is None:
        return ""
    return (value if isinstance(value, str) else str(value)).strip()


# ---------------------------------------------------------------- tool replies

def search_block(query: str, hits: Iterable[dict]) -> str:
    """One query's hits: ``{"title", "url", "snippet"}`` each."""
    lines = [f"--- search result for [{query}] ---"]
    for n, h in enumerate(hits, 1):
        lines.append(f"{n}. title: {(h.get('title') or '').strip()}")
        url, snippet = (h.get("url") or "").strip(), (h.get("snippet") or "").strip()
        if url:
            lines.append(f"  url: {url}")
        if snippet:
            lines.append(f"  snippet: {snippet}")
    lines.append("--- end of search result ---")
    return "\n".join(lines)


def search_error(query: str, error: str) -> str:
    return f"--- search error for [{query}]: {error} ---"


SEARCH_EMPTY_QUERIES = "[search] empty queries"
SEARCH_NO_RESULTS = "[search] no results"


def image_block(query: str, images: Iterable[dict]) -> str:
    """``{"img_id", "title", "url", "local_path", "page_url"}`` each."""
    lines = [f"--- image search result for [{query}] ---"]
    for r in images:
        lines.append(f"{r.get('img_id', '')}: title: {r.get('title') or 'image'}")
        for key in ("url", "local_path", "page_url"):
            if r.get(key):
                lines.append(f"  {key}: {r[key]}")
    lines.append("--- end of image search result ---")
    return "\n".join(lines)


def skill_reply(name: str, text: str) -> str:
    return f"## Skill Guidance\n\n=== Skill: {name} ===\n{text}"


def unknown_skill(name: str, names: Iterable[str]) -> str:
    return f"Unknown skill '{name}'. Available skills: {', '.join(names)}"


def missing_skill(name: str, expected_file) -> str:
    return f"No skill content available for '{name}'. Expected file: {expected_file}"


def unknown_tool(name: str) -> str:
    return f"Unknown tool: {name}"


def tool_error(name: str, exc: BaseException | str) -> str:
    return f"[tool error] {name}: {exc}"
