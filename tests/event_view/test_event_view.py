"""One renderer of events: a live run and the same run read back from the store draw the same cards,
in the studio's panel, the Inspector's timeline and the CLI alike."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import pytest
from PIL import Image

from genevolve.agent import Agent, AgentConfig
from genevolve.event_view import (DESCRIBERS, EventView, ThinkingFold, describe, think_only, trajectory_events,
                                  views)
from genevolve.protocol import format_answer, format_tool_call
from genevolve.store import Store
from genevolve.tools.base import Tool, ToolResult
from genevolve.trajectory import Event, TextDelta, Trajectory, WarningEvent


class Scripted:
    """A policy that plays given turns in small chunks, as a streaming model would."""

    name = "scripted"

    def __init__(self, turns, warnings=()):
        self.turns, self.warnings = list(turns), list(warnings)

    def stream(self, messages, images=()):
        turn = self.turns.pop(0)
        yield from (turn[i:i + 5] for i in range(0, len(turn), 5))

    def take_warnings(self):
        out, self.warnings = self.warnings, []
        return out


class Pictures(Tool):
    name = "image_search"

    def __call__(self, args, ctx):
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        path = ctx.work_dir / "kite.png"
        Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
        ref = ctx.registry.register(path, source="library", title="red kite")
        return ToolResult(text=f"{ref.img_id}: red kite (library)", images=[ref], backend="scripted-library")


class Digest(Tool):
    name = "search"

    def __call__(self, args, ctx):
        return ToolResult(text="Kites fly on wind. (source: https://example.org/kites)", backend="scripted-corpus")


def _answer(refs):
    return format_answer({"gen_prompt": 'A red kite over a hill, the word "FLY" in the sky.',
                          "reference_images": [{"img_id": i, "note": "kite"} for i in refs]}, think="writing it")


# garbage (format error) → search → image_search (an image) → an answer citing an unknown id (corrected)
# → the same again in the final round (repaired, forced)
TURNS = ["no tags at all",
         format_tool_call("search", {"queries": ["kite"]}, think="look it up"),
         format_tool_call("image_search", {"query": "red kite"}, think="find a picture"),
         _answer(["IMG_001", "IMG_009"]),
         _answer(["IMG_001", "IMG_009"])]


def _live_run(tmp_path, turns=TURNS, warnings=()):
    store = Store(tmp_path / "ge.db")
    agent = Agent(Scripted(turns, warnings), [Digest(), Pictures()], AgentConfig(max_rounds=5), store=store,
                  work_dir=tmp_path / "work")
    events = list(agent.stream('A red kite with the word "FLY"', []))
    traj = events[-1].trajectory
    stored = store.get_trajectory(traj.id)  # read back through the store, as the Inspector does
    return events, traj, stored


def _same_but_final_flag(view: EventView) -> EventView:
    # A stored step does not record which round was announced as final: compare dividers by round.
    return replace(view, title=f"round {view.round}") if view.divider else view


def test_a_stored_run_draws_the_same_cards_as_the_live_stream(tmp_path):
    events, traj, stored = _live_run(tmp_path)
    assert traj.termination == "forced_answer" and traj.program is not None
    live = [_same_but_final_flag(v) for v in views(events)]
    rebuilt = [_same_but_final_flag(v) for v in views(trajectory_events(stored))]
    assert [v.kind for v in live] == [v.kind for v in rebuilt]
    for a, b in zip(live, rebuilt):
        assert a == b, (a.kind, a.round)
    kinds = [v.kind for v in live]
    assert {"thinking", "format_error", "tool_call", "tool_result", "answer", "done"} <= set(kinds)
    answer = next(v for v in live if v.kind == "answer")
    assert answer.notes and answer.title.endswith("(forced in the final round)")
    result = next(v for v in live if v.kind == "tool_result" and v.images)
    assert [i.img_id for i in result.images] == ["IMG_001"] and "1 image(s)" in result.meta


def test_the_inspector_timeline_holds_the_live_panels_cards(tmp_path):
    from app.trajectory_view import EventPanel, card_html, timeline_html

    events, traj, stored = _live_run(tmp_path)
    panel = EventPanel()
    for event in events:
        panel.add(event)
    live_html = panel.html()
    timeline = timeline_html(stored, image_path=None)
    for view in views(events):
        if view.divider:
            continue  # a step block names its round instead
        assert card_html(view) in live_html
        assert card_html(view, round_label=view.round is None) in timeline, view.kind
    assert live_html.count("ge-ev-tool_call") == timeline.count("ge-ev-tool_call") == 2
    assert [s.round for s in stored.steps] == [int(x.split("'")[1]) for x in timeline.split("data-step=")[1:]]
    assert "ge-program" in timeline.split("data-step=")[-1]  # the answer step carries the program card
    assert "https://example.org/kites</a>" in timeline and "ge-repairs" in timeline


def test_thinking_is_folded_per_round_and_shows_only_the_think_block():
    fold = ThinkingFold()
    assert fold.feed(TextDelta(round=1, text="<think>look")) == []
    assert fold.pending().body == "look"
    assert fold.feed(TextDelta(round=1, text=" it up</think><tool_call>{}")) == []
    (card,) = fold.feed(TextDelta(round=2, text="<think>next"))
    assert (card.kind, card.round, card.body) == ("thinking", 1, "look it up")
    cards = fold.feed(WarningEvent(message="slow model", round=2))
    assert [c.kind for c in cards] == ["thinking", "warning"] and cards[0].body == "next"
    assert think_only("<answer>{}</answer>") == "" and fold.flush() == []


def test_an_event_type_without_a_describer_is_a_clear_error():
    @dataclass
    class Mystery(Event):
        type: str = "mystery"

    with pytest.raises(ValueError, match="no view for event type 'mystery'.*DESCRIBERS"):
        describe(Mystery())
    assert set(DESCRIBERS) == {"round_start", "text_delta", "tool_call", "tool_result", "format_error", "warning",
                               "answer", "done"}


def test_warnings_and_refused_requests_read_back_without_inventing_a_round(tmp_path):
    events, traj, stored = _live_run(tmp_path, warnings=["the model is slow"])
    live = [v for v in views(events) if v.kind == "warning"]
    rebuilt = views(trajectory_events(stored))
    assert [(v.title, v.round) for v in live] == [("the model is slow", 1)]
    assert [(v.kind, v.title, v.round) for v in rebuilt[-2:]] == [("warning", "the model is slow", None),
                                                                 ("done", "forced_answer", None)]
    refused = Trajectory(request="", termination="invalid_request", reason="the request is empty: say what to draw")
    assert [(v.kind, v.title) for v in views(trajectory_events(refused))] == [
        ("warning", "the request is empty: say what to draw"), ("done", "invalid_request")]


def test_the_cli_prints_each_event_as_its_view_says(tmp_path):
    from rich.console import Console

    from genevolve.cli import _EventPrinter

    events, traj, _ = _live_run(tmp_path)
    console = Console(file=io.StringIO(), width=120, color_system=None)
    printer = _EventPrinter(console)
    for event in events:
        printer(event)
    out = console.file.getvalue()
    assert "round 1" in out and "round 5" in out
    assert '→ search {"queries": ["kite"]}' in out and "← search (scripted-corpus · " in out
    assert "images: IMG_001 red kite" in out and "format error" in out
    assert "✓ program written (forced in the final round)" in out and '"gen_prompt"' in out
    # Streamed text ends mid-line; the next card starts on a line of its own.
    assert "\n→ search" in out and "forced_answer" not in out  # `run` prints the end line itself
