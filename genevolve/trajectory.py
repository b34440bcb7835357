"""Trajectories: the typed record of one agent run, its events, and its SFT export.

A trajectory is the request, a list of steps (one per round) and the image registry (every
image with its IMG id), the final program, how the run ended and its timings. The chat
messages exactly as the policy saw them are derived from the steps (``Trajectory.messages``):
each step holds the runtime message that opened its round, the policy's turn and the runtime's
reply, so the conversation and the steps cannot disagree. The UI, the store, the SFT export
and the trainers all read this one record.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
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
        # Found again by location (official numbering), e.g. a user's image listed by image_search.
        self._by_key.setdefault(f"location:{ref.url or ref.path}", ref.img_id)

    def add(self, ref: ImageRef) -> None:
        """Keep an image under the id it already has (one a tool made, or a recorded run's)."""
        with self._lock:
            self._insert(ref)

    def next_id(self) -> str:
        return f"IMG_{len(self.images) + 1:03d}"

    def register(self, path: str | Path, *, source: ImageSource, title: str = "", caption: str = "",
                 url: str | None = None, by_location: bool = False) -> ImageRef:
        """The image's id, new or the one it already has.

        ``by_location``: identity is the URL (else the file path) alone, as the official runtime
        numbers images, so one picture at two URLs gets two ids.
        """
        path = str(path)
        digest = file_sha256(path)
        with self._lock:
            keys = (f"location:{url or path}",) if by_location else (digest, url)
            for key in keys:
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
            if by_location:
                self.images[ref.img_id] = ref
                self._by_key[keys[0]] = ref.img_id
            else:
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
    stats: dict = field(default_factory=dict)  # the policy's token statistics so far (local models)
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
                "termination": self.trajectory.termination.value}


# ---------------------------------------------------------------- steps and trajectory

class Termination(StrEnum):
    """How a run ended. The values are what stored trajectories hold, so they never change."""

    RUNNING = "running"  # not ended (yet): a killed process leaves this in the store
    ANSWER = "answer"
    FORCED_ANSWER = "forced_answer"  # answered after the runtime announced the last round
    MAX_ROUNDS = "max_rounds"
    FORMAT_ERROR = "format_error"  # a second unusable turn in a row
    POLICY_ERROR = "policy_error"  # the policy (or the runtime itself) failed
    CANCELLED = "cancelled"
    INVALID_REQUEST = "invalid_request"  # nothing to plan; no round was run
    # The official runtime's names (genevolve.official.turns), used under the official profile
    # and by records imported from it.
    OFFICIAL_MAX_ROUNDS = "max_rounds_reached"
    NO_ANSWER = "no_answer"
    ERROR = "error"

    # A member and its string are one dict key (Enum hashes the member's name otherwise), so
    # counters and lookups keyed by the strings read from JSON keep working.
    __hash__ = str.__hash__

    @classmethod
    def _missing_(cls, value):
        raise ValueError(f"unknown termination {value!r}; expected one of: {', '.join(m.value for m in cls)}")


# A step whose kind is one of these holds a complete policy turn, which the conversation shows; a
# round cut short (policy error, cancellation) keeps its partial text out of the conversation.
TURN_KINDS = ("tool_call", "answer", "format_error")


@dataclass
class Step:
    round: int
    notice: str | None = None  # the runtime's message that opened this round (the last-round notice)
    assistant_text: str = ""
    think: str = ""
    kind: str = ""  # tool_call | answer | format_error | policy_error ("" for a round cut short)
    tool_name: str | None = None
    tool_arguments: dict | None = None
    tool_text: str | None = None
    tool_images: list[str] = field(default_factory=list)  # IMG ids
    tool_backend: str | None = None
    reply: str | None = None  # the runtime's answer to the turn: the tool reply, a correction or a nudge
    error: str | None = None
    policy_s: float = 0.0
    tool_s: float = 0.0
    round_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def messages(self, with_images: bool = True) -> list[dict]:
        """This round's part of the conversation: notice, the policy's turn, the runtime's reply."""
        out = []
        if self.notice is not None:
            out.append({"role": "user", "content": self.notice})
        if self.kind in TURN_KINDS:
            out.append({"role": "assistant", "content": self.assistant_text})
        if self.reply is not None:
            reply = {"role": "user", "content": self.reply}
            if with_images and self.kind == "tool_call":  # a tool reply shows the images it found
                reply["images"] = list(self.tool_images)
            out.append(reply)
        return out


@dataclass
class Trajectory:
    request: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: float = field(default_factory=time.time)
    # The conversation's opening (None until the run starts one): the system prompt and the
    # request as the policy first reads it (with the list of the user's images).
    system_prompt: str | None = None
    request_message: str | None = None
    # User messages carry the ids of the images they show (``images``); text-only profiles send none.
    images_in_messages: bool = True
    steps: list[Step] = field(default_factory=list)
    images: list[ImageRef] = field(default_factory=list)
    user_image_ids: list[str] = field(default_factory=list)
    program: Program | None = None
    termination: Termination = Termination.RUNNING
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    backends: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "termination":  # always a Termination, however it was given (a str from JSON, say)
            value = Termination(value)
        super().__setattr__(name, value)

    @property
    def messages(self) -> list[dict]:
        """The chat messages exactly as the policy saw them, derived from the opening and the steps."""
        if self.system_prompt is None:
            return []
        opening = {"role": "user", "content": self.request_message or ""}
        if self.images_in_messages:
            opening["images"] = list(self.user_image_ids)
        out = [{"role": "system", "content": self.system_prompt}, opening]
        for step in self.steps:
            out.extend(step.messages(self.images_in_messages))
        return out

    @property
    def round_timings(self) -> list[dict]:
        """Per-round timings (policy, tool, whole round), derived from the steps."""
        return [{"type": "round", "round": s.round, "kind": s.kind, "policy_s": round(s.policy_s, 4),
                 "tool_s": round(s.tool_s, 4), "round_s": round(s.round_s, 4)} for s in self.steps]

    @property
    def ok(self) -> bool:
        return self.program is not None

    def tool_calls(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "tool_call"]

    def skills_used(self) -> list[str]:
        """The skills the policy consulted, in order (a call that named no skill consulted none)."""
        names = [s.tool_arguments.get("skill_name") for s in self.tool_calls()
                 if s.tool_name == "query_knowledge" and isinstance(s.tool_arguments, dict)]
        return [str(name) for name in names if name]

    def image(self, img_id: str) -> ImageRef | None:
        return next((i for i in self.images if i.img_id == img_id), None)

    def to_dict(self) -> dict:
        # ``messages`` and ``round_timings`` are derived from the steps; they are written for the
        # readers of the file (replay, exports, people) and never read back.
        return {
            "id": self.id, "request": self.request, "created_at": self.created_at,
            "system_prompt": self.system_prompt, "request_message": self.request_message,
            "images_in_messages": self.images_in_messages,
            "messages": self.messages, "steps": [s.to_dict() for s in self.steps],
            "images": [i.to_dict() for i in self.images], "user_image_ids": self.user_image_ids,
            "program": self.program.model_dump() if self.program else None,
            "termination": self.termination.value, "reason": self.reason, "warnings": self.warnings,
            "backends": self.backends, "elapsed_s": self.elapsed_s, "round_timings": self.round_timings,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Trajectory":
        traj = cls(
            request=d["request"], id=d["id"], created_at=d.get("created_at", 0.0),
            system_prompt=d.get("system_prompt"), request_message=d.get("request_message"),
            images_in_messages=d.get("images_in_messages", True),
            steps=[Step(**s) for s in d.get("steps", [])],
            images=[ImageRef.from_dict(i) for i in d.get("images", [])],
            user_image_ids=d.get("user_image_ids", []),
            program=Program.model_validate(d["program"]) if d.get("program") else None,
            termination=d.get("termination", "running"), reason=d.get("reason"),
            warnings=d.get("warnings", []), backends=d.get("backends", {}),
            elapsed_s=d.get("elapsed_s", 0.0), meta=d.get("meta", {}),
        )
        if "system_prompt" not in d and d.get("messages"):  # written before messages came from the steps
            try:
                adopt_messages(traj, d["messages"])
            except ValueError as exc:
                raise ValueError(f"trajectory {traj.id}: {exc}") from exc
        return traj

    def summary(self) -> dict:
        return {
            "id": self.id, "request": self.request, "termination": self.termination.value,
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


def adopt_messages(traj: Trajectory, messages: list[dict]) -> None:
    """Spread a recorded conversation over the trajectory's steps, so they derive it again.

    For files written before the messages were derived from the steps, and for records of the
    official runtime. The recording has the runtime's shape: the system prompt, the request, then
    per round an optional notice, the policy's turn (one per step holding a complete turn) and the
    runtime's reply. Raises ValueError, saying where, when it does not.
    """
    if not messages:
        return
    if len(messages) < 2 or messages[0].get("role") != "system" or messages[1].get("role") != "user":
        raise ValueError("the conversation must open with a system message and then the user's request")
    opening = messages[1]
    traj.system_prompt = str(messages[0].get("content") or "")
    traj.request_message = str(opening.get("content") or "")
    traj.images_in_messages = "images" in opening
    steps = traj.steps
    current, spoke = 0, False  # the step the next message belongs to; whether its turn was seen
    for i, msg in enumerate(messages[2:], start=2):
        role, content = msg.get("role"), str(msg.get("content") or "")
        if role == "user" and spoke and steps[current].reply is None:
            steps[current].reply = content
            continue
        if spoke:  # the next message opens the next round
            current, spoke = current + 1, False
        if current == len(steps):
            if role == "assistant":
                raise ValueError(f"message {i} is a policy turn beyond the {len(steps)} recorded steps")
            steps.append(Step(round=len(steps) + 1))  # a round opened that never got a turn
        if role == "assistant":
            if steps[current].kind not in TURN_KINDS:
                raise ValueError(f"message {i} is a policy turn, but step {current + 1} holds none "
                                 f"(kind {steps[current].kind!r})")
            spoke = True
        elif role == "user" and steps[current].notice is None:
            steps[current].notice = content
        else:
            raise ValueError(f"message {i} ({role!r}) has no place in round {current + 1}")
    derived = traj.messages
    recorded = [dict(m) for m in messages]
    if derived != recorded:
        at = next((k for k, (a, b) in enumerate(zip(derived, recorded)) if a != b), min(len(derived), len(recorded)))
        raise ValueError(f"the steps do not reproduce the recorded conversation (first difference at message {at})")
