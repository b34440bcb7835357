"""Replay: scripted assistant turns from a file, one per call — for tests and exact reproduction.

Accepted files:
- JSONL, one ``{"content": "..."}`` (or a bare JSON string) per line;
- a JSON list of strings (or of ``{"content": ...}``);
- a saved trajectory JSON (``Trajectory.to_dict()``): its assistant messages are replayed.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Iterator, Sequence

from genevolve.policies.base import PolicyError


class ReplayPolicy:
    def __init__(self, path: str | Path, chunk_size: int = 16):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise PolicyError(f"replay file not found: {self.path}")
        self.turns = load_turns(self.path)
        if not self.turns:
            raise PolicyError(f"replay file has no assistant turns: {self.path}")
        self.name = f"replay:{self.path}"
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
