"""What every judge shares: the Scores record, the Judge interface, images and rubric levels.

``Judge.score(case, image, program, trajectory=None) -> Scores``. ``case`` is a bench row
(``question`` or ``prompt``, ``gt_image``, ``eval_type``, ``category``, ...), ``image`` a PIL
image or a path (None when nothing was rendered), ``program`` a Program or None when the
rollout failed. A judge never raises for a bad sample: it returns ``status="failed"`` with the
reason, so a benchmark can tell "scored 0" from "could not be scored".

Only the standard library and pydantic are imported at module level, so the training loop can
import judges cheaply. Remote judges talk to their model through ``chat_endpoint.ChatEndpoint``.
"""

from __future__ import annotations

import base64
import io
import re
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field


# The four KScore dimensions and their weights in the overall score (paper's values).
KSCORE_WEIGHTS = {"faithfulness": 0.1, "visual_correctness": 0.4, "text_accuracy": 0.4, "aesthetics": 0.1}
DIMENSIONS = tuple(KSCORE_WEIGHTS)
# Everything a summary aggregates, in display order.
METRICS = ("overall", *DIMENSIONS, "structure", "sufficiency", "constraint_coverage")
ALLOWED_LEVELS = (0.0, 0.5, 1.0)
TEXT_NA_SCORE = 0.5  # when the request asks for no readable text


class Scores(BaseModel):
    """One judge verdict for one case. A dimension left ``None`` was not measured."""

    faithfulness: float | None = None
    visual_correctness: float | None = None
    text_accuracy: float | None = None
    aesthetics: float | None = None
    overall: float | None = None
    sufficiency: float | None = None  # program sufficiency on {0, .25, .5, .75, 1}
    constraint_coverage: float | None = None  # share of derived constraints the program states
    # share of the request's subject, count, arrangement and position checks the render passes,
    # from the renderer's own layout report (None when the renderer reports no layout)
    structure: float | None = None
    rationale: str = ""
    status: Literal["scored", "failed"] = "scored"
    error: str | None = None
    judge: str = ""
    raw: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    elapsed_s: float = 0.0

    @classmethod
    def failed(cls, judge: str, error: str, raw: str | None = None, **kw) -> "Scores":
        return cls(status="failed", error=error, judge=judge, raw=raw, **kw)

    def metrics(self) -> dict[str, float | None]:
        return {m: getattr(self, m) for m in METRICS}


class JudgeError(RuntimeError):
    """The endpoint cannot be used at all (bad key, unknown model, unreachable after retries)."""


class Judge:
    """Base class: subclasses implement ``_score``; ``score`` adds timing and never raises."""

    spec: str = ""
    # Judges that read the renderer's report (what it drew and where) set this and take ``render``.
    uses_render_report = False

    def score(self, case: dict, image=None, program=None, trajectory=None, render: dict | None = None) -> Scores:
        """``render`` is the render report (``render_with_report``'s second value); a PIL image
        from ``render_with_report`` carries it too. Only judges that read it use it."""
        started = time.perf_counter()
        try:
            if self.uses_render_report:
                result = self._score(case, image, program, trajectory, render=render)
            else:
                result = self._score(case, image, program, trajectory)
        except JudgeError as exc:
            result = Scores.failed(self.spec, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad sample must not stop a benchmark
            result = Scores.failed(self.spec, f"{type(exc).__name__}: {exc}")
        result.judge = result.judge or self.spec
        result.elapsed_s = round(time.perf_counter() - started, 4)
        return result

    def _score(self, case: dict, image, program, trajectory) -> Scores:  # pragma: no cover - interface
        raise NotImplementedError


# ---------------------------------------------------------------- case and image helpers

def case_question(case: dict) -> str:
    q = case.get("question") if case.get("question") is not None else case.get("prompt")
    return str(q or "").strip()


def kscore_overall(f: float, v: float, t: float, a: float) -> float:
    return round(KSCORE_WEIGHTS["faithfulness"] * f + KSCORE_WEIGHTS["visual_correctness"] * v
                 + KSCORE_WEIGHTS["text_accuracy"] * t + KSCORE_WEIGHTS["aesthetics"] * a, 6)


def load_image(image_or_path):
    """A PIL image (RGB) from a PIL image, a path, or raw bytes."""
    from PIL import Image

    if image_or_path is None:
        return None
    if isinstance(image_or_path, Image.Image):
        return image_or_path.convert("RGB")
    if isinstance(image_or_path, (bytes, bytearray)):
        return Image.open(io.BytesIO(image_or_path)).convert("RGB")
    path = Path(image_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    with Image.open(path) as im:
        return im.convert("RGB")


_PASS_THROUGH = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
PASS_THROUGH_MAX_BYTES = 3 * 1024 * 1024


def image_data_uri(image_or_path, max_side: int = 1280, quality: int = 92) -> str:
    """A data URI for a judge request.

    A file that is already PNG/JPEG/WebP, at most ``max_side`` on its long side and at most
    3 MB is sent as is (no decode, no re-encode: exact pixels, almost no CPU, which matters
    when many judge threads share two cores). Anything else is downscaled and sent as
    JPEG at high quality.
    """
    from PIL import Image

    if isinstance(image_or_path, (str, Path)):
        path = Path(image_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        with Image.open(path) as im:  # reads the header only
            fmt, size = im.format, im.size
        if fmt in _PASS_THROUGH and max(size) <= max_side and path.stat().st_size <= PASS_THROUGH_MAX_BYTES:
            return f"data:{_PASS_THROUGH[fmt]};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    img = load_image(image_or_path)
    if max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), reducing_gap=2.0)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def read_level(value: Any, name: str, allowed=ALLOWED_LEVELS) -> float:
    """A rubric level from a number or numeric string; anything off the scale is an error."""
    if isinstance(value, bool):
        value = float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([01](?:\.\d+)?|\.\d+)\s*(?:/\s*1(?:\.0)?)?\s*", value)
        if not m:
            raise ValueError(f"{name} is not a number: {value!r}")
        value = float(m.group(1))
    if not isinstance(value, (int, float)):
        raise ValueError(f"{name} is not a number: {value!r}")
    for level in allowed:
        if abs(float(value) - level) < 1e-6:
            return level
    raise ValueError(f"{name}={value} is not one of {', '.join(str(a) for a in allowed)}")
