"""The turn protocol the policy speaks.

Each assistant turn is ``<think>…</think>`` followed by exactly one
``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` or ``<answer>{json}</answer>``.
Tool output goes back as a user message ``<tool_response>\\n…\\n</tool_response>``.

``parse_turn`` never raises: anything it cannot read becomes a ``Turn`` with ``error`` set,
so the runtime can send one corrective message instead of crashing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

TURN_END_STRINGS = ("</tool_call>", "</answer>")
_TAGS = ("think", "tool_call", "answer", "tool_response")
_ANY_TAG_RE = re.compile(r"<\s*(/?)\s*(think|tool_call|answer|tool_response)\s*>", re.IGNORECASE)


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Turn:
    kind: Literal["tool_call", "answer", "error"]
    think: str = ""
    tool_call: ToolCall | None = None
    answer: dict[str, Any] | None = None
    error: str | None = None
    raw: str = ""


def loads_lenient(text: str) -> Any:
    """json.loads that forgives what models commonly get wrong.

    Code fences, text around the object, trailing commas, Python-style True/False/None and
    single-quoted keys are repaired; anything else raises ValueError.
    """
    s = text.strip()
    fence = re.match(r"^```[a-zA-Z]*\s*(.*?)\s*```$", s, re.DOTALL)
    if fence:
        s = fence.group(1)
    try:
        return json.loads(s)
    except (json.JSONDecodeError, RecursionError):
        pass
    start = min((i for i in (s.find("{"), s.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise ValueError("no JSON object found")
    candidate = s[start:]
    end = max(candidate.rfind("}"), candidate.rfind("]"))
    if end >= 0:
        candidate = candidate[: end + 1]
    repaired = re.sub(r",\s*([}\]])", r"\1", candidate)
    repaired = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null", repaired)))
    for attempt in (candidate, repaired, re.sub(r"'([^'\\]*)'\s*:", r'"\1":', repaired)):
        try:
            return json.loads(attempt)
        except (json.JSONDecodeError, RecursionError):
            continue
    raise ValueError("malformed JSON")


def parse_turn(text: Any) -> Turn:
    """Parse one assistant turn into think / tool_call / answer, or a format error."""
    try:
        return _parse_turn(text if isinstance(text, str) else str(text))
    except Exception as exc:  # noqa: BLE001 - the contract is: never raise
        return Turn(kind="error", error=f"unreadable turn ({type(exc).__name__})", raw=str(text)[:10000])


def _parse_turn(text: str) -> Turn:
    think_m = re.search(r"<think>(.*?)</think>", text, re.DOTALL)
    think = think_m.group(1).strip() if think_m else ""
    rest = text[think_m.end():] if think_m else text
    if not think_m and "<think>" in text:
        return Turn(kind="error", error="<think> is not closed with </think>", raw=text)
    calls = re.findall(r"<tool_call>(.*?)</tool_call>", rest, re.DOTALL)
    answers = re.findall(r"<answer>(.*?)</answer>", rest, re.DOTALL)
    if len(calls) + len(answers) == 0:
        if "<tool_call>" in rest or "<answer>" in rest:
            return Turn(kind="error", think=think, raw=text,
                        error="the <tool_call> or <answer> block is not closed")
        return Turn(kind="error", think=think, raw=text,
                    error="no <tool_call> or <answer> block after </think>")
    if len(calls) + len(answers) > 1:
        return Turn(kind="error", think=think, raw=text,
                    error="a turn must contain exactly one <tool_call> or <answer> block")
    if calls:
        try:
            data = loads_lenient(calls[0])
        except ValueError as exc:
            return Turn(kind="error", think=think, raw=text, error=f"tool_call is not valid JSON: {exc}")
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"].strip():
            return Turn(kind="error", think=think, raw=text,
                        error='tool_call must be {"name": <tool>, "arguments": {...}}')
        args = data.get("arguments", data.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = loads_lenient(args) if args.strip() else {}
            except ValueError:
                return Turn(kind="error", think=think, raw=text, error="tool_call arguments are not a JSON object")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return Turn(kind="error", think=think, raw=text, error="tool_call arguments must be a JSON object")
        return Turn(kind="tool_call", think=think, tool_call=ToolCall(data["name"].strip(), args), raw=text)
    try:
        data = loads_lenient(answers[0])
    except ValueError as exc:
        return Turn(kind="error", think=think, raw=text, error=f"answer is not valid JSON: {exc}")
    if not isinstance(data, dict):
        return Turn(kind="error", think=think, raw=text, error="answer must be a JSON object")
    return Turn(kind="answer", think=think, answer=data, raw=text)


def format_tool_call(name: str, arguments: dict, think: str = "") -> str:
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<think>{think}</think>\n<tool_call>{body}</tool_call>"


def format_answer(answer: dict, think: str = "") -> str:
    return f"<think>{think}</think>\n<answer>{json.dumps(answer, ensure_ascii=False)}</answer>"


def neutralise(text: str) -> str:
    """Defang protocol tags inside tool output so a web page can never act as the model.

    ``<answer>`` becomes ``‹answer›``: still readable, never parsed.
    """
    return _ANY_TAG_RE.sub(lambda m: f"‹{m.group(1)}{m.group(2).lower()}›", text)


def format_tool_response(text: str) -> str:
    return f"<tool_response>\n{neutralise(text)}\n</tool_response>"


def truncate_at_turn_end(text: str) -> str:
    """Cut generated text right after the first closing action tag (models may run on)."""
    ends = [(text.find(s), s) for s in TURN_END_STRINGS if s in text]
    if not ends:
        return text
    pos, s = min(ends)
    return text[: pos + len(s)]


# ---------------------------------------------------------------- prompts

def default_system_prompt() -> str:
    return resources.files("genevolve").joinpath("prompts/system.md").read_text(encoding="utf-8")


def load_system_prompt(path: str | Path | None = None) -> str:
    """Our system prompt, or the user's file in its place."""
    if path is None:
        return default_system_prompt()
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"system prompt file not found: {p}")
    text = p.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"system prompt file is empty: {p}")
    return text


FINAL_ROUND_MESSAGE = (
    "This is the last round: tool calls are no longer allowed. Using what you have gathered, "
    "write your final program now as <think>…</think><answer>{\"gen_prompt\": …, "
    "\"reference_images\": […]}</answer>."
)


def correction_message(error: str) -> str:
    return (
        f"Your last turn could not be used: {error}. Reply again with <think>…</think> followed by "
        "exactly one <tool_call>{\"name\": …, \"arguments\": {…}}</tool_call> or one "
        "<answer>{\"gen_prompt\": …, \"reference_images\": […]}</answer>."
    )
