"""KScore as the official evaluator runs it (``kscore:…?rubric=official:<path>``).

With the official rubric the numbers should be the official evaluator's numbers, so everything
around the rubric follows that evaluator too (facts about its behaviour, described here in our
own words; the rubric text itself is read from the user's copy, never stored):

* the user message: a fixed text (sample id, the task prompt, which image is which, what to
  output), then the generated image and the ground truth, each re-encoded as JPEG quality 100
  (EXIF orientation applied, transparency flattened onto white, long side at most 4096 px);
  the text is protocol, kept byte-exact;
* sampling: temperature 0, up to 8,192 tokens;
* a reply that is empty or holds no readable JSON is asked for again, up to 20 times in all,
  with an exponential back-off (0.5 s doubling, at most 10 s, with jitter);
* reading the reply: code fences dropped; the text from the first ``{`` to the last ``}``
  parsed; on failure trailing commas dropped; on failure each field pulled out by a regular
  expression (exact lower-case key names only);
* scoring: each dimension is ``float()`` of its field (missing: 0), clipped to [0, 1] and
  rounded to 2 decimals; NaN ends up 1.0 (a clip with ``min``/``max`` keeps the bound);
  keys in other spellings, nested score objects or a rationale alone count 0; a value
  ``float()`` cannot read ("1/1", "N/A" outside text accuracy) fails the case (no new ask);
  ``text_accuracy_na`` true/"true"/"True"/1, or a text accuracy that is not a number, makes
  text accuracy not applicable (0.5); overall = 0.1·f + 0.4·v + 0.4·t + 0.1·a rounded to 2
  decimals; the rationale is cut to 1,000 characters.

Our own rubric keeps our reading (``kscore.parse_kscore_reply``): documented there, stricter
about what a non-number means, and forgiving about key spelling.
"""

from __future__ import annotations

import base64
import io
import json
import random
import re
import time
from typing import Any, Callable

from genevolve.judges.base import Scores

MAX_ASKS = 20  # the official evaluator's default (its GENEVOLVE_EVAL_MAX_TRY)
MAX_TOKENS = 8192
TEMPERATURE = 0.0
MAX_SIDE = 4096
JPEG_QUALITY = 100
_KEYS = ("faithfulness", "visual_correctness", "text_accuracy", "aesthetics")

# Protocol: the official evaluator's user message, byte for byte.
USER_TEXT = ("Sample id: {sample_id}\n\n"
             "Task prompt (image requirement):\n{prompt}\n\n"
             "Image 1: the **generated image** (to be evaluated).\n"
             "Image 2: the **ground-truth reference image**.\n\n"
             "Output a single JSON object with the three scores and a short rationale.")


class UnreadableReply(ValueError):
    """The reply is empty or holds no JSON object; the official evaluator asks again."""


def image_data_uri(image_or_path) -> str:
    """JPEG q100 (optimised), EXIF-upright, transparency on white, long side at most 4096 px."""
    from PIL import Image, ImageOps

    im = Image.open(image_or_path) if not isinstance(image_or_path, Image.Image) else image_or_path
    try:
        im = ImageOps.exif_transpose(im)
        w, h = im.size
        if max(w, h) > MAX_SIDE:
            scale = MAX_SIDE / float(max(w, h))
            im = im.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.LANCZOS)
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = Image.new("RGB", im.size, (255, 255, 255))
            im.paste(rgba, mask=rgba.split()[-1])
        else:
            im = im.convert("RGB")
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    finally:
        if not isinstance(image_or_path, Image.Image):
            im.close()
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("utf-8")


def build_messages(rubric: str, sample_id: str, prompt: str, image, gt_image) -> list[dict]:
    content: list[dict] = [{"type": "text", "text": USER_TEXT.format(sample_id=sample_id, prompt=prompt)}]
    for item in (image, gt_image):
        content.append({"type": "image_url", "image_url": {"url": image_data_uri(item)}})
    return [{"role": "system", "content": rubric}, {"role": "user", "content": content}]


def case_prompt(case: dict) -> str:
    """The request as the official evaluator takes it: ``prompt``, else ``question``."""
    return str(case.get("prompt") or case.get("question") or "").strip()


# ---------------------------------------------------------------- reading a reply

def _unfence(text: str) -> str:
    text = re.sub(r"^```[a-zA-Z0-9]*\s*", "", text)
    return re.sub(r"\s*```$", "", text).strip()


def _fields_one_by_one(text: str) -> dict:
    text = _unfence((text or "").strip())
    out: dict[str, Any] = {}
    for key in (*_KEYS, "score"):
        m = re.search(rf'["\']?{re.escape(key)}["\']?\s*:\s*([^,\n}}\]]+)', text)
        if m:
            raw = m.group(1).strip().strip("\"'")
            try:
                out[key] = float(raw)
            except ValueError:
                out[key] = raw
    m = re.search(r'["\']?text_accuracy_na["\']?\s*:\s*([^,\n}}\]]+)', text)
    if m:
        out["text_accuracy_na"] = m.group(1).strip().strip("\"'").lower() in {"true", "1", "yes"}
    m = re.search(r'["\']?rationale["\']?\s*:\s*"(.{0,1000})', text, flags=re.DOTALL)
    if m:
        out["rationale"] = re.sub(r"\s+", " ", m.group(1)).strip()
    return out


def read_reply(text: str | None) -> dict:
    """The reply's JSON object read the official way; UnreadableReply when it has none."""
    content = (text or "").strip()
    if not content:
        raise UnreadableReply("empty_content")
    if content.startswith("```"):
        content = _unfence(content)
    start, end = content.find("{"), content.rfind("}")
    if start != -1 and end > start:
        content = content[start:end + 1]
    for attempt in (content, re.sub(r",\s*]", "]", re.sub(r",\s*}", "}", content))):
        try:
            obj = json.loads(attempt)
            break
        except json.JSONDecodeError:
            continue
    else:
        obj = _fields_one_by_one(attempt)
        if not obj:
            raise UnreadableReply("LLM output is not valid JSON.")
    if not isinstance(obj, dict):
        raise UnreadableReply("LLM output is not a JSON object.")
    return obj


def _level(value: Any) -> float:
    return round(max(0.0, min(1.0, float(value))), 2)  # NaN: min(1.0, nan) is 1.0


def scores_from(obj: dict, judge: str, raw: str) -> Scores:
    """Scores from a reply object, or a failed case where the official evaluator fails it."""
    try:
        f = _level(obj.get("faithfulness", 0))
        v = _level(obj.get("visual_correctness", 0))
        na = obj.get("text_accuracy_na") in (True, "true", "True", 1)
        t = None
        if not na:
            try:
                t = _level(obj.get("text_accuracy", 0))
            except (TypeError, ValueError):
                na = True
        a = _level(obj.get("aesthetics", 0))
    except (TypeError, ValueError) as exc:
        return Scores.failed(judge, str(exc)[:300], raw=raw)
    t_val = 0.5 if na else t
    overall = round(0.1 * f + 0.4 * v + 0.4 * t_val + 0.1 * a, 2)
    return Scores(faithfulness=f, visual_correctness=v, text_accuracy=t_val, aesthetics=a, overall=overall,
                  rationale=str(obj.get("rationale", ""))[:1000], judge=judge, raw=raw,
                  details={"text_accuracy_na": na, "rubric": "official"})


def ask(complete: Callable[[list[dict]], str], messages: list[dict], *, max_asks: int = MAX_ASKS,
        sleep: Callable[[float], None] = time.sleep) -> tuple[dict, str, int]:
    """(reply object, reply text, asks used): the judge asked again after an unreadable reply,
    up to ``max_asks`` times, waiting 0.5 s, 1 s, 2 s … (at most 10 s, ±20 % jitter)."""
    last: UnreadableReply | None = None
    for n in range(1, max(1, max_asks) + 1):
        text = complete(messages)
        try:
            return read_reply(text), text, n
        except UnreadableReply as exc:
            last = exc
        if n < max_asks:
            sleep(min(10.0, 0.5 * 2 ** (n - 1)) * (0.8 + 0.4 * random.random()))
    raise UnreadableReply(f"{last} (asked {max(1, max_asks)} times)")
