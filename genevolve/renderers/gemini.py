"""``gemini[:<model>]`` — Nano Banana Pro (and other Gemini image models) over the REST API.

One ``generateContent`` call: the program's prompt as text, each reference image inline
(base64 ``inline_data``, in order, so "the first reference image" is the first picture), and an
image config with the aspect ratio nearest to the asked size. The key comes from GEMINI_API_KEY
or GOOGLE_API_KEY; GEMINI_BASE_URL points elsewhere (a proxy, or a local fake in tests).
429 and 5xx answers are retried with exponential backoff (honouring Retry-After).
"""

from __future__ import annotations

import base64
import io
import os
import time

from PIL import Image

from genevolve.program import Program
from genevolve.renderers.base import (
    Progress, Renderer, RenderError, as_program, check_size, decode_image_bytes, default_size, fit_exact,
    load_references,
)

DEFAULT_MODEL = "gemini-3-pro-image-preview"
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
ASPECT_RATIOS = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"]
RETRY_STATUS = {429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 60.0


def nearest_aspect(w: int, h: int) -> str:
    import math

    target = math.log(w / h)
    return min(ASPECT_RATIOS, key=lambda r: abs(math.log(int(r.split(":")[0]) / int(r.split(":")[1])) - target))


def api_key() -> str | None:
    return os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY") or None


class GeminiRenderer(Renderer):
    generative = True

    def __init__(self, model: str | None = None, *, api_key: str | None = None, base_url: str | None = None,
                 retries: int = 4, backoff_s: float = 2.0, timeout_s: float = 300.0):
        self.model = model or DEFAULT_MODEL
        self.name = f"gemini:{self.model}"
        self._key = api_key
        self.base_url = (base_url or os.environ.get("GEMINI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.last_info: dict = {}

    def _api_key(self) -> str:
        key = self._key or api_key()
        if not key:
            raise RenderError("the Gemini renderer needs an API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), "
                              "or use --renderer layout to render offline")
        return key

    def request_body(self, program: Program, refs: list[Image.Image], size: tuple[int, int], seed: int) -> dict:
        parts: list[dict] = [{"text": program.gen_prompt}]
        for img in refs:
            buf = io.BytesIO()
            im = img.convert("RGB")
            if max(im.size) > 1536:  # the API scales larger inputs down anyway; spare the upload
                im = im.copy()
                im.thumbnail((1536, 1536), Image.Resampling.LANCZOS)
            im.save(buf, format="JPEG", quality=92)
            parts.append({"inline_data": {"mime_type": "image/jpeg",
                                          "data": base64.b64encode(buf.getvalue()).decode("ascii")}})
        side = max(size)
        image_size = "1K" if side <= 1024 else "2K" if side <= 2048 else "4K"
        return {
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "seed": int(seed),
                                 "imageConfig": {"aspectRatio": nearest_aspect(*size), "imageSize": image_size}},
        }

    def render(self, program: Program, size: tuple[int, int] | None = None, seed: int = 0,
               progress: Progress | None = None) -> Image.Image:
        from genevolve.http_limits import RemoteError, post_json

        program = as_program(program)
        key = self._api_key()
        refs = load_references(program)
        asked = check_size(size) if size else None
        target = asked or default_size(program, [r.size for r in refs])
        body = self.request_body(program, refs, target, seed)
        url = f"{self.base_url}/v1beta/models/{self.model}:generateContent"
        errors: list[str] = []
        for attempt in range(self.retries + 1):
            try:
                # The whole answer within timeout_s of wall-clock time and 64 MB (a dripping or
                # endless server is cut off); redirects are not followed.
                resp = post_json(url, body, timeout_s=self.timeout_s, deadline_s=self.timeout_s,
                                 max_bytes=64 * 1024 * 1024,
                                 headers={"x-goog-api-key": key, "Content-Type": "application/json"})
            except RemoteError as exc:
                if not exc.retryable:
                    raise RenderError(f"Gemini: {exc}") from None
                errors.append(str(exc))
                wait = self.backoff_s * 2 ** attempt
            else:
                if resp.status_code == 200:
                    image, text = self._parse(resp)
                    self.last_info = {"model": self.model, "attempts": attempt + 1,
                                      "generated_size": list(image.size), "aspect_ratio": nearest_aspect(*target)}
                    if text:
                        self.last_info["model_text"] = text[:500]
                    if progress:
                        progress(1, 1)
                    # Gemini picks pixel sizes per aspect ratio; an explicit size is honoured exactly.
                    return fit_exact(image, asked) if asked else image
                message = _api_error(resp)
                if resp.status_code not in RETRY_STATUS:
                    hint = " (check the API key)" if resp.status_code in (401, 403) else ""
                    raise RenderError(f"Gemini refused the request: HTTP {resp.status_code} {message}{hint}")
                errors.append(f"HTTP {resp.status_code} {message}")
                wait = self.backoff_s * 2 ** attempt
                retry_after = resp.headers.get("retry-after")
                if retry_after:
                    try:
                        wait = min(MAX_RETRY_AFTER_S, max(wait, float(retry_after)))
                    except ValueError:
                        pass
            if attempt < self.retries:
                time.sleep(wait)
        raise RenderError(f"Gemini failed after {self.retries + 1} attempts: " + "; ".join(errors[-3:]))

    @staticmethod
    def _parse(resp) -> tuple[Image.Image, str]:
        """The first image part of the first candidate, and any text the model said."""
        try:
            data = resp.json()
        except ValueError as exc:
            raise RenderError(f"Gemini answered with a body that is not JSON: {resp.text[:200]!r}") from exc
        candidates = data.get("candidates") if isinstance(data, dict) else None
        if not isinstance(candidates, list) or not candidates:
            feedback = data.get("promptFeedback") if isinstance(data, dict) else None
            raise RenderError(f"Gemini returned no candidates (prompt feedback: {feedback!r}); "
                              f"the prompt may have been blocked — rephrase it")
        cand = candidates[0] if isinstance(candidates[0], dict) else {}
        parts = (cand.get("content") or {}).get("parts") or []
        texts = []
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            inline = part.get("inlineData") or part.get("inline_data")
            if isinstance(inline, dict) and inline.get("data"):
                return decode_image_bytes(inline["data"], what="Gemini's image part"), " ".join(texts)
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
        reason = cand.get("finishReason")
        raise RenderError(f"Gemini returned no image (finishReason={reason!r}"
                          + (f", text: {' '.join(texts)[:200]!r}" if texts else "") + ")")

    def describe(self) -> dict:
        return dict(self.last_info) or {"model": self.model}


def _api_error(resp) -> str:
    try:
        err = resp.json().get("error", {})
        return f"{err.get('status', '')} {err.get('message', '')}".strip() or resp.text[:200]
    except (ValueError, AttributeError):
        return resp.text[:200]
