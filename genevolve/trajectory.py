"""Trajectories: the typed record of one agent run, its events, and its SFT export.

A trajectory is a list of steps (one per round) plus the chat messages exactly as the policy
saw them, the image registry (every image with its IMG id), the final program and timings.
The UI, the store, the SFT export and the trainers all read this one record.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from genevolve.program import Program

ImageSource = Literal["user", "library", "web"]


@dataclass
class ImageRef:
    """One image a trajectory can cite, materialised as a local file."""

    img_id: str
    path: str
    source: ImageSource = "library"
    title: str = ""
    caption: str = ""
    url: str | None = None
    width: int | None = None
    height: int | None = None
    sha256: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ImageRef":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k in d})


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ImageRegistry:
    """Hands out trajectory-unique IMG_### ids; the same image found twice keeps its id.

    Identity is the file content hash (and the source URL when there is one), so an image
    that two searches both return is one reference, not two.
    """

    def __init__(self, images: list[ImageRef] | None = None):
        self._lock = threading.Lock()
        self.images: dict[str, ImageRef] = {}
        self._by_key: dict[str, str] = {}
        for ref in images or []:
            self._insert(ref)

    def _insert(self, ref: ImageRef) -> None:
        self.images[ref.img_id] = ref
        for key in (ref.sha256, ref.url):
            if key:
                self._by_key[key] = ref.img_id

    def next_id(self) -> str:
        return f"IMG_{len(self.images) + 1:03d}"

    def register(self, path: str | Path, *, source: ImageSource, title: str = "", caption: str = "",
                 url: str | None = None) -> ImageRef:
        path = str(path)
        digest = file_sha256(path)
        with self._lock:
            for key in (digest, url):
                if key and key in self._by_key:
                    return self.images[self._by_key[key]]
            width = height = None
            try:
                from PIL import Image

                with Image.open(path) as im:
                    width, height = im.size
            except Exception:  # noqa: BLE001 - size is informative only
                pass
            ref = ImageRef(img_id=self.next_id(), path=path, source=source, title=title, caption=caption,
                           url=url, width=width, height=height, sha256=digest)
            self._insert(ref)
            return ref

    def get(self, img_id: str) -> ImageRef | None:
        return self.images.get(img_id)

    def ids(self) -> set[str]:
        return set(self.images)

    def list(self) -> list[ImageRef]:
        return list(self.images.values())


# ---------------------------------------------------------------- events

@dataclass
class Event:
    type: str = field(init=False, default="event")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["type"] = self.type
        return d


@dataclass
class RoundStart(Event):
    round: int
    final: bool = False
    type: str = field(init=False, default="round_start")


@dataclass
class TextDelta(Event):
    round: int
    text: str
    type: str = field(init=False, default="text_delta")


@dataclass
class ToolCallEvent(Event):
    round: int
    name: str
    arguments: dict
    type: str = field(init=False, default="tool_call")


@dataclass
class ToolResultEvent(Event):
    round: int
    name: str
    text: str
    images: list[ImageRef] = field(default_factory=list)
    elapsed_s: float = 0.0
    error: str | None = None
    backend: str | None = None
    type: str = field(init=False, default="tool_result")


@dataclass
class FormatErrorEvent(Event):
    round: int
    error: str
    text: str = ""
    type: str = field(init=False, default="format_error")


@dataclass
class WarningEvent(Event):
    message: str
    round: int | None = None
    type: str = field(init=False, default="warning")


@dataclass
class AnswerEvent(Event):
    round: int
    program: Program
    forced: bool = False
    repairs: list[str] = field(default_factory=list)
    type: str = field(init=False, default="answer")

    def to_dict(self) -> dict:
        return {"type": self.type, "round": self.round, "program": self.program.model_dump(),
                "forced": self.forced, "repairs": self.repairs}


@dataclass
class Done(Event):
    trajectory: "Trajectory"
    type: str = field(init=False, default="done")

    def to_dict(self) -> dict:
        return {"type": self.type, "trajectory_id": self.trajectory.id,
                "termination": self.trajectory.termination}


# ---------------------------------------------------------------- steps and trajectory

@dataclass
class Step:
    round: int
    assistant_text: str = ""
    think: str = ""
    kind: str = ""  # tool_call | answer | format_error | policy_error
    tool_name: str | None = None
    tool_arguments: dict | None = None
    tool_text: str | None = None
    tool_images: list[str] = field(default_factory=list)  # IMG ids
    tool_backend: str | None = None
    error: str | None = None
    policy_s: float = 0.0
    tool_s: float = 0.0
    round_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


Termination = Literal["answer", "forced_answer", "max_rounds", "format_error", "policy_error",
                      "cancelled", "invalid_request", "running"]


@dataclass
class Trajectory:
    request: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: float = field(default_factory=time.time)
    messages: list[dict] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    images: list[ImageRef] = field(default_factory=list)
    user_image_ids: list[str] = field(default_factory=list)
    program: Program | None = None
    termination: str = "running"
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    backends: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    events: list[dict] = field(default_factory=list)  # compact event log (text deltas merged)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.program is not None

    def tool_calls(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "tool_call"]

    def skills_used(self) -> list[str]:
        return [str((s.tool_arguments or {}).get("skill_name")) for s in self.tool_calls()
                if s.tool_name == "query_knowledge"]

    def image(self, img_id: str) -> ImageRef | None:
        return next((i for i in self.images if i.img_id == img_id), None)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "request": self.request, "created_at": self.created_at,
            "messages": self.messages, "steps": [s.to_dict() for s in self.steps],
            "images": [i.to_dict() for i in self.images], "user_image_ids": self.user_image_ids,
            "program": self.program.model_dump() if self.program else None,
            "termination": self.termination, "reason": self.reason, "warnings": self.warnings,
            "backends": self.backends, "elapsed_s": self.elapsed_s, "events": self.events,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Trajectory":
        return cls(
            request=d["request"], id=d["id"], created_at=d.get("created_at", 0.0),
            messages=d.get("messages", []), steps=[Step(**s) for s in d.get("steps", [])],
            images=[ImageRef.from_dict(i) for i in d.get("images", [])],
            user_image_ids=d.get("user_image_ids", []),
            program=Program.model_validate(d["program"]) if d.get("program") else None,
            termination=d.get("termination", "running"), reason=d.get("reason"),
            warnings=d.get("warnings", []), backends=d.get("backends", {}),
            elapsed_s=d.get("elapsed_s", 0.0), events=d.get("events", []), meta=d.get("meta", {}),
        )

    def summary(self) -> dict:
        return {
            "id": self.id, "request": self.request, "termination": self.termination,
            "reason": self.reason, "rounds": len(self.steps), "tool_calls": len(self.tool_calls()),
            "skills": self.skills_used(), "elapsed_s": round(self.elapsed_s, 3),
            "backends": self.backends, "warnings": self.warnings,
            "program": self.program.model_dump() if self.program else None,
        }

    def to_sft_record(self, out_dir: str | Path | None = None) -> dict:
        """The SFT record: ``{"messages": [...], "images": [relative paths]}``.

        Each image shown to the model is marked ``<image>`` in the message that carried it,
        in order, and ``images`` lists the files in that same order. With ``out_dir`` the
        files are copied under ``out_dir/images/`` and the paths are relative to ``out_dir``.
        """
        by_id = {i.img_id: i for i in self.images}
        messages, paths = [], []
        for msg in self.messages:
            content = msg["content"]
            ids = msg.get("images") or []
            if ids:
                content = "".join("<image>" for _ in ids) + content
                for img_id in ids:
                    src = Path(by_id[img_id].path)
                    if out_dir is not None:
                        rel = Path("images") / f"{self.id}_{img_id}{src.suffix or '.png'}"
                        dest = Path(out_dir) / rel
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        if not dest.exists():
                            shutil.copyfile(src, dest)
                        paths.append(rel.as_posix())
                    else:
                        paths.append(str(src))
            messages.append({"role": msg["role"], "content": content})
        return {"messages": messages, "images": paths}
