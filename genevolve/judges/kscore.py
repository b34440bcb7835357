"""KScore: a VLM judge on four dimensions, each exactly 0, 0.5 or 1.

overall = 0.1·faithfulness + 0.4·visual_correctness + 0.4·text_accuracy + 0.1·aesthetics.
The judge sees Image 1 = the generated image and Image 2 = the ground truth. When a case has
no ground truth the prompt says so and the judge compares against the request alone. When the
request asks for no readable text the judge sets ``text_accuracy_na`` and text accuracy counts
as 0.5. The rubric wording is ours; the dimensions, levels and weights are the paper's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from genevolve.judges.base import (
    DIMENSIONS,
    TEXT_NA_SCORE,
    Judge,
    Scores,
    case_question,
    image_data_uri,
    kscore_overall,
)
from genevolve.judges.chat_endpoint import ChatEndpoint, EndpointOptions, parse_json_reply
from genevolve.specs import is_true, param

@dataclass
class KScoreOptions(EndpointOptions):
    """What a ``kscore:`` spec takes after its base URL, besides the endpoint's own options."""

    rubric: str | None = param(None, "A rubric file, or official:/path/to/GenEvolve for the release's.")
    image_side: int | None = param(None, "Long side, in pixels, of the images sent to the judge (default 1280).")
    asks: int | None = param(None, "rubric=official: how many times an unreadable reply is asked for "
                                   "(default 20, as the official evaluator).")


KSCORE_SYSTEM = (
    "You grade AI-generated images against the request that produced them. You are strict, "
    "consistent and literal: you check what is visible, not what was probably intended. "
    "You reply with one JSON object and nothing else."
)

KSCORE_RUBRIC = """Request given to the image generator:
<<<
{question}
>>>

{image_note}

Grade Image 1 on four dimensions. Each grade is exactly 0, 0.5 or 1 - no other values.

1. faithfulness - does Image 1 carry out the request's instructions: the subjects, their
   actions and arrangement, the requested style or medium, and every explicit constraint
   (numbers of things, positions, named colours, requested text)?
   1 = every instruction is met; 0.5 = the main intent is met but at least one stated
   constraint is missed or wrong; 0 = the main subject or intent is missing or wrong.
2. visual_correctness - are the depicted things right in identity and in their defining
   visual details (the exact landmark, person, product, model year, artefact, scientific
   structure), and physically and anatomically plausible? {gt_clause}
   1 = correct and recognisable in its defining features; 0.5 = recognisable but with
   clear errors in important details; 0 = the wrong thing, or not recognisable.
3. text_accuracy - is every piece of text the request asks for rendered exactly (spelling,
   words, order), legibly, without extra garbled lettering?
   1 = all requested text exact and legible; 0.5 = present with small errors, or minor
   stray lettering; 0 = missing, misspelled beyond a letter or two, or illegible.
   If the request asks for no readable text at all, set "text_accuracy_na": true (it is
   then counted as 0.5) and still give text_accuracy your best grade.
4. aesthetics - composition, lighting, colour harmony, finish, absence of artefacts.
   1 = polished and pleasing; 0.5 = acceptable with visible flaws; 0 = poor or broken.

First list the constraints you extracted from the request, then explain each grade briefly.
Reply with exactly this JSON object:
{{"constraints": ["<constraint>", ...],
  "rationale": "<constraints first, then one sentence per dimension>",
  "faithfulness": 0 | 0.5 | 1,
  "visual_correctness": 0 | 0.5 | 1,
  "text_accuracy": 0 | 0.5 | 1,
  "text_accuracy_na": true | false,
  "aesthetics": 0 | 0.5 | 1}}"""

_WITH_GT = ("Two images follow. Image 1 is the GENERATED image to grade. Image 2 is the GROUND "
            "TRUTH: a correct depiction of the subject, used only as evidence of what the "
            "subject really looks like - Image 1 need not copy its composition.")
_NO_GT = ("One image follows: Image 1, the GENERATED image to grade. There is NO ground-truth "
          "image for this request; judge against the request and your own knowledge of the "
          "subject.")


def build_kscore_messages(question: str, image, gt_image=None, max_side: int = 1280,
                          rubric: str | None = None) -> list[dict]:
    """The chat messages for one KScore call: rubric text, then Image 1 (and Image 2).

    ``rubric`` replaces our system prompt and rubric with the user's own (e.g. the official
    evaluator's); the user message then carries only the request and the two labelled images.
    """
    has_gt = gt_image is not None
    if rubric:
        text = (f"Request given to the image generator:\n{question}\n\n"
                + ("Image 1 is the generated image to grade; Image 2 is the ground-truth reference."
                   if has_gt else "Image 1 is the generated image to grade; there is no ground-truth image.")
                + "\nReply with the JSON object your instructions ask for.")
        system = rubric
    else:
        text = KSCORE_RUBRIC.format(
            question=question, image_note=_WITH_GT if has_gt else _NO_GT,
            gt_clause="Use Image 2 as the reference for identity and details." if has_gt
            else "There is no reference image; rely on what the subject is known to look like.")
        system = KSCORE_SYSTEM
    parts: list[dict] = [{"type": "text", "text": text}, {"type": "text", "text": "Image 1 (generated):"},
                         {"type": "image_url", "image_url": {"url": image_data_uri(image, max_side)}}]
    if has_gt:
        parts += [{"type": "text", "text": "Image 2 (ground truth):"},
                  {"type": "image_url", "image_url": {"url": image_data_uri(gt_image, max_side)}}]
    return [{"role": "system", "content": system}, {"role": "user", "content": parts}]


# How a broken judge reply is read, as forgivingly as the official evaluator reads it: a level is
# clipped to [0, 1] and rounded to 2 decimals; a missing dimension counts 0; a text_accuracy that
# is not a number ('N/A') means "not applicable" (0.5); from JSON that does not parse (truncated,
# unescaped quotes) each field is recovered on its own. A case fails only when no score field can
# be recovered at all, or a non-text dimension holds something that is not a number.
_FIELD_RE = r"[\"']?{key}[\"']?\s*:\s*([^,\n}}\]]+)"


def recover_fields(text: str) -> dict:
    """Score fields pulled one by one out of a reply whose JSON does not parse."""
    body = re.sub(r"^```[a-zA-Z0-9]*\s*|\s*```$", "", (text or "").strip())
    out: dict = {}
    for key in DIMENSIONS:
        m = re.search(_FIELD_RE.format(key=re.escape(key)), body)
        if m:
            raw = m.group(1).strip().strip("\"'")
            out[key] = _number(raw) if _number(raw) is not None else raw
    m = re.search(_FIELD_RE.format(key="text_accuracy_na"), body)
    if m:
        out["text_accuracy_na"] = is_true(m.group(1).strip().strip("\"'"))
    m = re.search(r"[\"']?rationale[\"']?\s*:\s*\"(.{0,1000})", body, re.DOTALL)
    if m:
        out["rationale"] = re.sub(r"\s+", " ", m.group(1)).strip()
    return out


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = re.sub(r"\s*/\s*1(?:\.0)?\s*$", "", value.strip())  # "0.5/1"
        try:
            number = float(text)  # as float() reads it: "0." is 0 (a reply cut mid-number)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def parse_kscore_reply(text: str, judge: str = "kscore") -> Scores:
    """Scores from a judge reply; ``failed`` (with the reason) only when nothing usable is in it."""
    notes: list[str] = []
    try:
        data = parse_json_reply(text)
        recovered = False
    except ValueError as exc:
        data = recover_fields(text)
        if not any(d in data for d in DIMENSIONS):
            return Scores.failed(judge, f"unreadable judge reply: {exc}", raw=text)
        recovered = True
        notes.append(f"the reply is not valid JSON ({exc}); fields recovered one by one")
    lowered = {str(k).strip().lower().replace(" ", "_"): v for k, v in data.items()}
    if not any(d in lowered for d in DIMENSIONS):
        return Scores.failed(judge, "judge reply has none of the score fields "
                                    f"({', '.join(DIMENSIONS)})", raw=text)
    na_raw = lowered.get("text_accuracy_na")
    # The official evaluator's reading: JSON true/"true"/"True"/1 means not applicable.
    na = bool(na_raw) if recovered else na_raw in (True, "true", "True", 1)
    levels: dict[str, float] = {}
    problems: list[str] = []
    for dim in DIMENSIONS:
        if dim == "text_accuracy" and na:
            levels[dim] = TEXT_NA_SCORE
            continue
        if dim not in lowered:
            levels[dim] = 0.0
            notes.append(f"missing field '{dim}' counted as 0")
            continue
        value = _number(lowered[dim])
        if value is None:
            if dim == "text_accuracy":  # 'N/A' and friends: not applicable
                na, levels[dim] = True, TEXT_NA_SCORE
                notes.append(f"text_accuracy {lowered[dim]!r} read as not applicable")
                continue
            problems.append(f"{dim} is not a number: {lowered[dim]!r}")
            continue
        level = round(min(1.0, max(0.0, value)), 2)
        if level != value:
            notes.append(f"{dim}={value:g} clipped to {level:g}")
        levels[dim] = level
    rationale = lowered.get("rationale") or lowered.get("reason") or ""
    constraints = lowered.get("constraints")
    if isinstance(constraints, list) and constraints:
        listed = "; ".join(str(c) for c in constraints)
        if listed not in str(rationale):
            rationale = f"Constraints: {listed}. {rationale}".strip()
    if problems:
        return Scores.failed(judge, "judge reply unusable: " + "; ".join(problems), raw=text,
                             rationale=str(rationale), **{d: v for d, v in levels.items()})
    details = {"text_accuracy_na": bool(na), "constraints": constraints if isinstance(constraints, list) else []}
    if notes:
        details["parse_notes"] = notes
    return Scores(**levels, overall=kscore_overall(*(levels[d] for d in DIMENSIONS)),
                  rationale=str(rationale), judge=judge, raw=text, details=details)


class KScoreJudge(Judge):
    def __init__(self, endpoint: ChatEndpoint, spec: str = "", max_side: int = 1280, bench_root: str | None = None,
                 rubric: str | None = None, official: bool = False, max_asks: int | None = None):
        self.endpoint = endpoint
        # rubric=official: the official evaluator's message, re-asks and reading (kscore_official)
        self.official, self.max_asks = official, max_asks
        self.spec = spec or f"kscore:{endpoint.model}@{endpoint.base_url}"
        self.max_side = max_side
        self.bench_root = bench_root
        self.rubric = rubric  # the user's rubric (system prompt) in place of ours; None: ours

    def _score(self, case, image, program, trajectory) -> Scores:
        if image is None:
            return Scores.failed(self.spec, "no image to judge (the rollout or the render failed)")
        question = case_question(case)
        if not question:
            return Scores.failed(self.spec, "the case has no question/prompt")
        gt = _resolve_gt(case.get("gt_image"), self.bench_root or case.get("_root"))
        if self.official:
            return self._score_official(case, image, gt)
        messages = build_kscore_messages(question, image, gt, self.max_side, self.rubric)
        reply = self.endpoint.complete(messages)
        scores = parse_kscore_reply(reply, self.spec)
        scores.details["has_gt"] = gt is not None
        if self.rubric:
            scores.details["rubric"] = "custom"
        return scores

    def _score_official(self, case, image, gt) -> Scores:
        from genevolve.judges import kscore_official as off

        if gt is None:  # the official evaluator does not judge a case without its ground truth
            return Scores.failed(self.spec, "missing_gt_image")
        messages = off.build_messages(self.rubric, str(case.get("id", "")), off.case_prompt(case), image, gt)
        try:
            obj, reply, asks = off.ask(self.endpoint.complete, messages,
                                       max_asks=self.max_asks or off.MAX_ASKS)
        except off.UnreadableReply as exc:
            return Scores.failed(self.spec, f"unreadable judge reply: {exc}")
        scores = off.scores_from(obj, self.spec, reply)
        scores.details.update(has_gt=True, asks=asks)
        return scores


def is_official_rubric(source: str | None) -> bool:
    return bool(source) and (source == "official" or source.startswith("official:"))


def load_rubric(source: str) -> str:
    """A rubric (judge system prompt) from a text file, or ``official:<path>``: the official
    evaluator's own rubric, read from the user's copy of the release without running it."""
    from genevolve.official.assets import OfficialAssetsError, WHERE_TO_GET, read_string_constants

    if source.startswith("official:") or source == "official":
        root = Path(source.partition(":")[2] or ".").expanduser()
        script = root / "scripts" / "evaluate_images.py"
        if not script.is_file():
            raise ValueError(f"official rubric: {script} not found. {WHERE_TO_GET}")
        try:
            text = read_string_constants(script, ("SYSTEM_PROMPT",)).get("SYSTEM_PROMPT")
        except OfficialAssetsError as exc:
            raise ValueError(str(exc)) from exc
        if not text:
            raise ValueError(f"official rubric: {script} has no SYSTEM_PROMPT string")
        return text
    path = Path(source).expanduser()
    if not path.is_file():
        raise ValueError(f"judge rubric file not found: {path} (a text file with the judge's instructions, "
                         "or official:/path/to/GenEvolve)")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"judge rubric file is empty: {path}")
    return text


def _resolve_gt(gt, root):
    """The ground-truth image as a path or PIL image, or None; a listed file that is missing
    is an error (judging without the GT would silently change the benchmark)."""
    if gt is None or gt == "":
        return None
    if not isinstance(gt, (str, Path)):
        return gt  # already an image (e.g. a datasets Image feature)
    p = Path(gt)
    if not p.is_absolute() and root:
        p = Path(root) / p
    if not p.is_file():
        raise FileNotFoundError(f"ground-truth image listed but not found: {p}")
    return p
