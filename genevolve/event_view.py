"""What each agent event says, once: the neutral description the CLI and the studio both draw.

A live run streams typed events (``genevolve.trajectory``: RoundStart, TextDelta, ToolCallEvent,
ToolResultEvent, FormatErrorEvent, WarningEvent, AnswerEvent, Done). ``describe(event)`` turns
each into an ``EventView`` — icon, title, severity, meta line, body, images — dispatched on the
event type in one table. The outputs on top stay thin: the studio turns views into HTML cards
(``app.trajectory_view``), the CLI into Rich lines (``genevolve.cli``).

A stored run has no event log, only its steps; ``trajectory_events(traj)`` rebuilds from them the
events a live run of that trajectory emitted, so the Inspector's timeline and the live panel are
drawn by the same code and agree. ``ThinkingFold`` merges streamed text deltas into one
"thinking" view per round, as both panels show them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal

from genevolve.trajectory import (AnswerEvent, Done, Event, FormatErrorEvent, ImageRef, RoundStart, TextDelta,
                                  ToolCallEvent, ToolResultEvent, Trajectory, WarningEvent)

Severity = Literal["info", "good", "warn", "bad"]
# How the body reads: plain tool text, a search digest (text with source links), skill guidance
# (long: folded away), the policy's thinking (folded away), JSON data (tool arguments), or the
# program (the studio shows it in its own pane; the CLI prints it).
BodyFormat = Literal["text", "digest", "skill", "thinking", "json", "program"]

SKILL_TOOL = "query_knowledge"
SEARCH_TOOL = "search"
REPAIRED_PREFIX = "program repaired: "  # how the agent records an answer's repairs in traj.warnings


@dataclass
class EventView:
    """One event as a reader sees it, free of any output format."""

    kind: str  # the event's type, or "thinking" for merged text deltas; outputs key their styles on it
    title: str
    round: int | None = None
    icon: str = ""
    severity: Severity = "info"
    meta: str = ""  # secondary facts on the title line (backend, time, counts)
    error: str | None = None  # shown beside the title
    body: str = ""
    body_format: BodyFormat = "text"
    data: dict | None = None  # the structured payload behind a json/program body
    images: list[ImageRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # bullet items (an answer's repairs)
    divider: bool = False  # a separator between rounds rather than a card


def think_only(text: str) -> str:
    """The readable part of a turn (also while it streams): the think block, not the call/answer markup."""
    text = text.replace("<think>", "")
    for stop in ("</think>", "<tool_call>", "<answer>"):
        if stop in text:
            text = text.split(stop, 1)[0]
    return text


def thinking_view(round_: int | None, streamed: str) -> EventView | None:
    """The thinking card of one round, from the text the policy streamed in it (None when it had none)."""
    text = think_only(streamed).strip()
    if not text:
        return None
    return EventView(kind="thinking", title="thinking", round=round_, body=text, body_format="thinking")


# ---------------------------------------------------------------- one describer per event type

def _round_start(e: RoundStart) -> EventView:
    return EventView(kind=e.type, title=f"round {e.round}" + (" · final" if e.final else ""), round=e.round,
                     divider=True)


def _text_delta(e: TextDelta) -> EventView:
    # A fragment, not a card: live outputs append it; ThinkingFold merges a round's fragments.
    return EventView(kind=e.type, title="", round=e.round, body=e.text, body_format="thinking")


def _tool_call(e: ToolCallEvent) -> EventView:
    return EventView(kind=e.type, title=e.name, round=e.round, icon="→", body_format="json", data=e.arguments,
                     body=_json(e.arguments))


def _tool_result(e: ToolResultEvent) -> EventView:
    meta = f"{e.backend or '-'} · {e.elapsed_s:.2f}s" + (f" · {len(e.images)} image(s)" if e.images else "")
    form = "skill" if e.name == SKILL_TOOL else "digest" if e.name == SEARCH_TOOL else "text"
    return EventView(kind=e.type, title=e.name, round=e.round, icon="←", meta=meta, error=e.error,
                     body=e.text or "", body_format=form, images=list(e.images))


def _format_error(e: FormatErrorEvent) -> EventView:
    return EventView(kind=e.type, title="format error", round=e.round, severity="bad", error=e.error)


def _warning(e: WarningEvent) -> EventView:
    return EventView(kind=e.type, title=e.message, round=e.round, icon="⚠", severity="warn")


def _answer(e: AnswerEvent) -> EventView:
    title = "program written" + (" (forced in the final round)" if e.forced else "")
    data = e.program.model_dump(exclude={"reference_images": {"__all__": {"path"}}})
    return EventView(kind=e.type, title=title, round=e.round, icon="✓", severity="good", body_format="program",
                     data=data, notes=list(e.repairs))


def _done(e: Done) -> EventView:
    tr = e.trajectory
    meta = f"{len(tr.steps)} rounds · {len(tr.tool_calls())} tool calls · {tr.elapsed_s:.2f}s"
    if tr.reason:
        meta += f" · {tr.reason}"
    return EventView(kind=e.type, title=str(tr.termination), severity="good" if tr.ok else "bad", meta=meta)


DESCRIBERS: dict[str, Callable[[Event], EventView]] = {
    "round_start": _round_start,
    "text_delta": _text_delta,
    "tool_call": _tool_call,
    "tool_result": _tool_result,
    "format_error": _format_error,
    "warning": _warning,
    "answer": _answer,
    "done": _done,
}


def describe(event: Event) -> EventView:
    """The view of one event; an event type without a describer is an error, not a blank card."""
    try:
        describer = DESCRIBERS[event.type]
    except KeyError:
        raise ValueError(f"no view for event type {event.type!r}: add a describer to DESCRIBERS "
                         f"in {__name__}") from None
    return describer(event)


def _json(value) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, indent=1)
    except TypeError:
        return str(value)


# ---------------------------------------------------------------- folding a stream into cards

class ThinkingFold:
    """Turns an event stream into cards: a round's text deltas become one thinking card,
    placed before the next event; every other event becomes its own card."""

    def __init__(self):
        self.text = ""
        self.round: int | None = None

    def feed(self, event: Event) -> list[EventView]:
        """The cards completed by this event (a text delta completes none)."""
        if event.type == "text_delta":
            out = self.flush() if self.round != event.round else []
            self.round = event.round
            self.text += event.text
            return out
        return self.flush() + [describe(event)]

    def flush(self) -> list[EventView]:
        view = thinking_view(self.round, self.text)
        self.text, self.round = "", None
        return [view] if view else []

    def pending(self) -> EventView | None:
        """The thinking streamed so far in the current round (not yet a card)."""
        return thinking_view(self.round, self.text)


def views(events) -> list[EventView]:
    """All cards of a finished event stream."""
    fold = ThinkingFold()
    out: list[EventView] = []
    for event in events:
        out.extend(fold.feed(event))
    return out + fold.flush()


# ---------------------------------------------------------------- a stored run as events

def trajectory_events(traj: Trajectory) -> Iterator[Event]:
    """The events a live run of ``traj`` emitted, rebuilt from its steps.

    What the stored steps do not keep is left out rather than guessed: which round was announced
    as final (every RoundStart here has ``final=False``) and the round of each warning (warnings
    come just before the end). A policy error has no event of its own, live or here: the end card
    carries it as the reason.
    """
    if traj.termination == "invalid_request" and traj.reason:  # refused before round 1, said as a warning
        yield WarningEvent(message=traj.reason)
    images = {i.img_id: i for i in traj.images}
    repairs = [w[len(REPAIRED_PREFIX):] for w in traj.warnings if w.startswith(REPAIRED_PREFIX)]
    for s in traj.steps:
        yield RoundStart(round=s.round)
        if s.assistant_text:
            yield TextDelta(round=s.round, text=s.assistant_text)
        if s.kind == "tool_call":
            yield ToolCallEvent(round=s.round, name=s.tool_name or "", arguments=s.tool_arguments or {})
            yield ToolResultEvent(round=s.round, name=s.tool_name or "", text=s.tool_text or "",
                                  images=[images[i] for i in s.tool_images if i in images],
                                  elapsed_s=s.tool_s, error=s.error, backend=s.tool_backend)
        elif s.kind == "format_error":
            yield FormatErrorEvent(round=s.round, error=s.error or "", text=s.assistant_text)
        elif s.kind == "answer":
            if traj.program is not None:
                yield AnswerEvent(round=s.round, program=traj.program, forced=traj.termination == "forced_answer",
                                  repairs=repairs)
            elif traj.reason:  # an official-profile answer without a gen_prompt: a warning, as live
                yield WarningEvent(message=traj.reason, round=s.round)
    for w in traj.warnings:
        if not w.startswith(REPAIRED_PREFIX) and w != traj.reason:
            yield WarningEvent(message=w)
    yield Done(trajectory=traj)
