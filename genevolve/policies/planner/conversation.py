"""Reading the conversation: the planner is stateless, so every turn starts from the messages.

``read_state`` recovers the request, the user's image ids, the tool calls already made, their
replies and whether the runtime demands an answer now (a final-round or a correction message).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from genevolve.program import IMG_ID_RE
from genevolve.protocol import (
    CORRECTION_PREFIX,
    FINAL_ROUND_MESSAGE,
    parse_turn,
    split_user_images_note,
    unwrap_tool_response,
)


@dataclass
class PlannerState:
    """What the conversation so far tells the planner."""

    request: str
    user_ids: list[str]
    done_calls: list[tuple[str, dict]] = field(default_factory=list)
    responses: list[tuple[str, dict, str]] = field(default_factory=list)  # (tool, args, response text)
    must_answer: bool = False
    # The tool whose reply no assistant turn has followed yet (a runtime message may come after it).
    last_reply_tool: str | None = None

    def last_reply_is(self, tool: str) -> bool:
        return self.last_reply_tool == tool


def read_state(messages: list[dict]) -> PlannerState:
    first_user = next((m for m in messages if m.get("role") == "user"), {"content": ""})
    content = str(first_user.get("content") or "")
    user_ids = [i for i in (first_user.get("images") or []) if isinstance(i, str)]
    content, listing = split_user_images_note(content)
    if listing is not None and not user_ids:
        user_ids = IMG_ID_RE.findall(listing)
    state = PlannerState(request=content.strip(), user_ids=user_ids)
    last_call: tuple[str, dict] | None = None
    seen_first = False
    for msg in messages:
        role, text = msg.get("role"), str(msg.get("content") or "")
        if role == "assistant":
            state.last_reply_tool = None
            turn = parse_turn(text)
            last_call = (turn.tool_call.name, turn.tool_call.arguments) if turn.kind == "tool_call" else None
            if last_call:
                state.done_calls.append(last_call)
        elif role == "user":
            if msg is first_user and not seen_first:
                seen_first = True
                continue
            body = unwrap_tool_response(text)
            if body is not None and last_call is not None:
                state.responses.append((last_call[0], last_call[1], body))
                state.last_reply_tool = last_call[0]
                last_call = None
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    if last_user is not None and last_user is not first_user:
        text = str(last_user.get("content") or "")
        if text == FINAL_ROUND_MESSAGE or text.startswith(CORRECTION_PREFIX):
            state.must_answer = True
    if any(m.get("role") == "user" and m.get("content") == FINAL_ROUND_MESSAGE for m in messages):
        state.must_answer = True
    return state
