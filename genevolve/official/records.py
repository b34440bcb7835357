"""The official runtime's result records, both ways.

An official ``results.json`` is a JSON array of records ``{"prompt", "gen_prompt",
"reference_images": [{"img_id", "note", "local_path", "url", "title", "page_url"}], "messages",
"termination", "rounds", "error", "id", ...the input row's own fields}``; after rendering, a record
also has ``output_path`` / ``image_path`` / ``success`` / ``image_status``, which is what the
official evaluator reads (with ``gt_image`` and ``eval_type``/``category``/``difficulty``).

* ``record_to_trajectory`` — a record as one of our trajectories (steps re-read from its messages,
  images from its image_search replies and references), so it shows in the Inspector, replays
  with its recorded tool replies, and renders.
* ``trajectory_to_record`` — one of our runs in their layout, so their evaluator runs on our
  outputs unchanged (``genevolve.bench.official_export`` writes a whole bench run with it).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from genevolve.official import turns
from genevolve.program import Program, Reference, derive_constraints
from genevolve.trajectory import ImageRef, Step, Termination, Trajectory, adopt_messages

_IMG_LINE = re.compile(r"^(IMG_\d{3,}): title: (.*)$")
_FIELD_LINE = re.compile(r"^  (url|local_path|page_url): (.*)$")
_RESPONSE = re.compile(r"^<tool_response>\n(.*)\n</tool_response>$", re.DOTALL)


class RecordError(ValueError):
    """A file or record that is not in the official results layout; the message says what is wrong."""


def load_results(path: str | Path) -> list[dict]:
    """The records of an official ``results.json`` (summary rows of their evaluator are skipped)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise RecordError(f"results file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RecordError(f"{p} is not JSON ({exc}); expected the official runtime's results.json "
                          "(a JSON array of result records)") from exc
    if isinstance(data, dict) and "messages" in data:
        data = [data]  # one record on its own
    if not isinstance(data, list):
        raise RecordError(f"{p}: expected a JSON array of result records, found {type(data).__name__}")
    records = [r for r in data if not (isinstance(r, dict) and "summary_type" in r)]
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise RecordError(f"{p}: entry {i} is not a JSON object")
        if not _request_of(r):
            raise RecordError(f"{p}: entry {i} has no 'prompt' or 'question'")
    return records


def select_record(records: list[dict], record_id: str | None, where: str = "") -> dict:
    """One record by its ``id`` (or 0-based index); the only record when there is one."""
    if record_id is None:
        if len(records) == 1:
            return records[0]
        ids = ", ".join(str(r.get("id", i)) for i, r in enumerate(records[:12]))
        raise RecordError(f"{where or 'the results file'} holds {len(records)} records; pick one with ?id=<id> "
                          f"(ids: {ids}{', …' if len(records) > 12 else ''})")
    for r in records:
        if str(r.get("id")) == str(record_id):
            return r
    if str(record_id).isdigit() and int(record_id) < len(records):
        return records[int(record_id)]
    raise RecordError(f"no record with id {record_id!r} in {where or 'the results file'}")


def _request_of(record: dict) -> str:
    return str(record.get("prompt") or record.get("question") or "").strip()


# ---------------------------------------------------------------- official -> ours

def recorded_images(text: str) -> list[ImageRef]:
    """The images an official image_search reply lists, with their recorded files and URLs."""
    out: list[ImageRef] = []
    for line in text.splitlines():
        m = _IMG_LINE.match(line)
        if m:
            out.append(ImageRef(img_id=m.group(1), path="", source="web", title=m.group(2)))
            continue
        f = _FIELD_LINE.match(line)
        if f and out:
            key, value = f.groups()
            if key == "local_path":
                out[-1].path = value
            elif key == "url":
                out[-1].url = value
            else:
                out[-1].caption = f"web image from {value}"
    return out


def unwrap(content: str) -> str | None:
    """The text inside ``<tool_response>\\n…\\n</tool_response>``, or None for any other message."""
    m = _RESPONSE.match(content or "")
    return m.group(1) if m else None


def record_to_trajectory(record: dict, *, source: str | None = None) -> Trajectory:
    """An official result record as our trajectory (protocol ``official``, imported)."""
    request = _request_of(record)
    if not request:
        raise RecordError("the record has no 'prompt' or 'question'")
    messages = record.get("messages") or []
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise RecordError("the record's 'messages' must be a list of {role, content}")
    messages = [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in messages]
    images: dict[str, ImageRef] = {}
    steps: list[Step] = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        step = Step(round=len(steps) + 1, assistant_text=msg["content"])
        turn = turns.parse_turn(msg["content"])
        step.think = turn.think
        reply = messages[i + 1]["content"] if i + 1 < len(messages) and messages[i + 1]["role"] == "user" else None
        inner = unwrap(reply) if reply is not None else None
        if turn.kind == "answer":
            step.kind = "answer"
        elif turn.kind == "tool_call":
            step.kind, step.tool_name, step.tool_arguments = "tool_call", turn.tool_call.name, turn.tool_call.arguments
            step.tool_text = inner
            if inner is not None and step.tool_name == "image_search":
                shown = recorded_images(inner)
                step.tool_images = [r.img_id for r in shown]
                for ref in shown:
                    images.setdefault(ref.img_id, ref)
            if inner is not None and inner.startswith("[tool error]"):
                step.error = inner
        else:
            step.kind, step.error = "format_error", turn.error
        steps.append(step)
    program = None
    gen_prompt = str(record.get("gen_prompt") or "").strip()
    refs = []
    for r in record.get("reference_images") or []:
        if not isinstance(r, dict) or not r.get("img_id"):
            continue
        img_id = str(r["img_id"]).strip()
        known = images.get(img_id)
        path = str(r.get("local_path") or (known.path if known else "") or "") or None
        refs.append(Reference(img_id=img_id, note=str(r.get("note") or ""), path=path))
        if known is None:
            images[img_id] = ImageRef(img_id=img_id, path=path or "", source="web", title=str(r.get("title") or ""),
                                      url=r.get("url") or None)
    if gen_prompt:
        program = Program(gen_prompt=gen_prompt, reference_images=refs)
        program.constraints = derive_constraints(request, program)
    digest = hashlib.sha256(json.dumps([request, messages, str(record.get("id"))], ensure_ascii=False)
                            .encode("utf-8")).hexdigest()[:12]
    passthrough = {k: v for k, v in record.items() if k not in ("messages", "gen_prompt", "reference_images", "prompt")}
    try:
        termination = Termination(str(record.get("termination") or ("answer" if program else "no_answer")))
    except ValueError as exc:
        raise RecordError(f"the record's 'termination': {exc}") from exc
    traj = Trajectory(request=request, id=f"off{digest}", steps=steps,
                      images=sorted(images.values(), key=lambda r: r.img_id), program=program,
                      termination=termination, reason=record.get("error") or None,
                      backends={"policy": "official (imported)"},
                      meta={"protocol": "official", "imported_from": "official", "source_file": source,
                            "record": passthrough})
    try:
        adopt_messages(traj, messages)  # the steps hold the conversation from here on
    except ValueError as exc:
        raise RecordError(f"the record's 'messages' are not a conversation of the official runtime: {exc}") from exc
    image = record.get("output_path") or record.get("image_path")
    if image:
        traj.meta["image_path"] = str(image)
    return traj


def import_results(path: str | Path, store) -> list[Trajectory]:
    """Every record of an official results.json into the store (re-importing updates, never duplicates)."""
    src = str(Path(path).expanduser().resolve())
    out = []
    for record in load_results(path):
        traj = record_to_trajectory(record, source=src)
        store.save_trajectory(traj)
        image = traj.meta.get("image_path")
        if image and Path(image).is_file():
            store.attach_render(traj.id, image, {"backend": "official (imported)"})
        out.append(traj)
    return out


def record_program(record: dict, base_dir: str | Path | None = None) -> tuple[Program, list[str]]:
    """What the official ``generate_images.py`` renders for a record, and notes saying where that
    differs from the recorded answer.

    It renders the answer's gen_prompt with its references when the answer has a gen_prompt and at
    least one reference whose ``local_path`` file exists (references without a file are left out);
    in every other case (no answer, an empty gen_prompt, no reference files) it renders the user's
    own request with no references. Relative ``local_path`` values are read from ``base_dir``.
    """
    gen_prompt = str(record.get("gen_prompt") or "").strip()
    refs, missing = [], []
    for i, r in enumerate(record.get("reference_images") or []):
        if not isinstance(r, dict):
            continue
        img_id = str(r.get("img_id") or f"IMG_{i + 1:03d}")
        path = str(r.get("local_path") or "").strip()
        if path and base_dir is not None and not Path(path).is_absolute():
            path = str((Path(base_dir) / path).resolve())
        if path and Path(path).is_file():
            refs.append(Reference(img_id=img_id, note=str(r.get("note") or ""), path=path))
        else:
            missing.append(f"{img_id} ({path or 'no local_path'})")
    notes = []
    if missing:
        notes.append(f"reference file(s) not found, left out as the official generate_images.py leaves them: "
                     f"{', '.join(missing)}")
    if gen_prompt and refs:
        program = Program(gen_prompt=gen_prompt, reference_images=refs)
    else:
        request = _request_of(record)
        why = ("the record has no answer" if not gen_prompt and not record.get("reference_images")
               else "the answer's gen_prompt is empty" if not gen_prompt else "the answer has no reference file")
        notes.append(f"{why}: rendering the user's request as it is, with no references, as the official "
                     "generate_images.py does")
        program = Program(gen_prompt=request, reference_images=[])
    program.constraints = derive_constraints(_request_of(record), program)
    return program, notes


def is_official_record(data: Any) -> bool:
    """An official result record, as opposed to our program.json (no request, no messages)."""
    if not isinstance(data, dict) or "gen_prompt" not in data:
        return False
    if any(k in data for k in ("messages", "prompt", "question")):
        return True
    return any(isinstance(r, dict) and "local_path" in r for r in data.get("reference_images") or [])


# ---------------------------------------------------------------- ours -> official

def trajectory_to_record(traj: Trajectory) -> dict:
    """Our trajectory as an official result record (before rendering)."""
    by_id = {i.img_id: i for i in traj.images}
    refs = []
    for r in (traj.program.reference_images if traj.program else []):
        img = by_id.get(r.img_id)
        refs.append({"img_id": r.img_id, "note": r.note, "local_path": r.path or (img.path if img else ""),
                     "url": (img.url if img else None) or "", "title": img.title if img else "",
                     "page_url": ""})
    return {"prompt": traj.request, "gen_prompt": traj.program.gen_prompt if traj.program else "",
            "reference_images": refs,
            "messages": [{"role": m["role"], "content": m["content"]} for m in traj.messages],
            "termination": traj.termination.value, "rounds": len(traj.steps),
            "error": None if traj.program else (traj.reason or traj.termination.value)}
