"""Replay: scripted assistant turns from a file, one per call — for tests and exact reproduction.

Accepted files:
- JSONL, one ``{"content": "..."}`` (or a bare JSON string) per line;
- a JSON list of strings (or of ``{"content": ...}``);
- a saved trajectory JSON (``Trajectory.to_dict()``): its assistant messages are replayed;
- an official result record, or an official ``results.json`` (``replay:results.json?id=<id>``;
  the id may be left out when the file holds one record), or a trajectory imported from one.

A recorded official run replays under the official profile built from its own texts (its system
prompt and final-step message are in its messages), and its tool calls are answered with the
recorded tool replies (``recorded_tool_reply``): nothing is searched again, so the conversation
is the recorded one, message for message.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Iterator, Sequence

from genevolve.policies.base import PolicyBase
from genevolve.policies.base import PolicyError


class ReplayPolicy(PolicyBase):
    def __init__(self, path: str | Path, chunk_size: int = 16, record: str | None = None):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise PolicyError(f"replay file not found: {self.path}")
        self.recorded: list[str | None] | None = None  # tool replies to give back, per turn
        messages = _recorded_official_messages(self.path, record)
        if messages is not None:
            self.turns = [m["content"] for m in messages if m["role"] == "assistant"]
            self.recorded = _replies_after_turns(messages)
            self.preferred_protocol = _recorded_profile(messages, self.path)
            self.recorded_max_rounds = _final_round(messages)
        else:
            self.turns = load_turns(self.path)
        if not self.turns:
            raise PolicyError(f"replay file has no assistant turns: {self.path}")
        self.name = f"replay:{self.path}" + (f"?id={record}" if record is not None else "")
        self.chunk_size = max(1, chunk_size)
        self._next = 0
        self._lock = threading.Lock()

    def _take(self) -> str:
        with self._lock:
            if self._next >= len(self.turns):
                raise PolicyError(f"replay ran out of turns after {len(self.turns)} ({self.path.name})")
            turn = self.turns[self._next]
            self._next += 1
            return turn

    def stream(self, messages: list[dict], images: Sequence = ()) -> Iterator[str]:
        turn = self._take()
        # Small chunks so consumers see a real stream, as from a model.
        for i in range(0, len(turn), self.chunk_size):
            yield turn[i:i + self.chunk_size]

    def sample(self, messages: list[dict], n: int) -> list[str]:
        return [self._take() for _ in range(n)]

    def recorded_tool_reply(self) -> str | None:
        """The recorded tool reply to the turn just played, or None (then the tool really runs)."""
        with self._lock:
            if self.recorded is None or not 0 < self._next <= len(self.recorded):
                return None
            return self.recorded[self._next - 1]

    def reset(self) -> None:
        with self._lock:
            self._next = 0

    @property
    def remaining(self) -> int:
        return len(self.turns) - self._next


def load_turns(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    stripped = text.strip()
    if not stripped:
        return []
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        data = None  # not one JSON document: read it as JSONL
    if isinstance(data, dict):
        if "messages" not in data:
            raise PolicyError(f"{path}: a JSON object must be a saved trajectory with 'messages'")
        return [str(m.get("content", "")) for m in data["messages"] if m.get("role") == "assistant"]
    if isinstance(data, list):
        return [_content(item, path, i) for i, item in enumerate(data)]
    if isinstance(data, str):
        return [data]
    turns = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{path}:{lineno}: not JSON ({exc.msg})") from exc
        turns.append(_content(item, path, lineno))
    return turns


def _content(item, path: Path, where: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("content"), str):
        return item["content"]
    raise PolicyError(f"{path}: entry {where} is neither a string nor {{\"content\": str}}")


# ---------------------------------------------------------------- recorded official runs

def _recorded_official_messages(path: Path, record: str | None) -> list[dict] | None:
    """The messages of an official record (or of a trajectory imported from one); None otherwise."""
    from genevolve.official import records as official

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None
    if isinstance(data, dict) and (data.get("meta") or {}).get("imported_from") == "official":
        return [{"role": m["role"], "content": m["content"]} for m in data.get("messages") or []]
    is_results = isinstance(data, list) and any(isinstance(r, dict) and "messages" in r and "gen_prompt" in r
                                                for r in data)
    if not (is_results or official.is_official_record(data)) or (isinstance(data, dict) and "steps" in data):
        if record is not None:
            raise PolicyError(f"{path}: ?id= picks a record of an official results.json; this file is not one")
        return None
    try:
        chosen = official.select_record(official.load_results(path), record, str(path))
    except official.RecordError as exc:
        raise PolicyError(str(exc)) from exc
    return [{"role": str(m.get("role")), "content": str(m.get("content") or "")}
            for m in chosen.get("messages") or [] if isinstance(m, dict)]


def _replies_after_turns(messages: list[dict]) -> list[str | None]:
    from genevolve.official.records import unwrap
    from genevolve.official.turns import parse_turn

    out = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        nxt = messages[i + 1] if i + 1 < len(messages) else None
        is_call = parse_turn(m["content"]).kind == "tool_call"
        out.append(unwrap(nxt["content"]) if is_call and nxt and nxt["role"] == "user" else None)
    return out


def _final_round(messages: list[dict]) -> int | None:
    """The round the recorded run announced as its last (its round cap), if it got that far."""
    from genevolve.official.records import unwrap

    rounds = 0
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            rounds += 1
        elif m["role"] == "user" and i > 1 and unwrap(m["content"]) is None:
            return rounds + 1
    return None


def _recorded_profile(messages: list[dict], path: Path):
    """The official profile with the texts this run was recorded with (no copy of the release needed)."""
    from genevolve.official.assets import OfficialAssets
    from genevolve.official.records import unwrap
    from genevolve.profiles import OFFICIAL_SAMPLING, OfficialProfile

    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    users = [m["content"] for m in messages if m["role"] == "user"]
    final = next((u for u in users[1:] if unwrap(u) is None), "")
    assets = OfficialAssets(package_dir=path.parent, system_prompt=system, final_step_message=final,
                            skills_dir=path.parent, skills={})
    return OfficialProfile("official", "", sampling=dict(OFFICIAL_SAMPLING), text_only=True,
                           assets=assets, source=None)
