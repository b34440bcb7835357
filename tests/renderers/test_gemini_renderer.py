"""``gemini[:model]`` against a local server that speaks the generateContent wire shape."""

from __future__ import annotations

import base64
import io
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from genevolve.program import Constraint, Program, Reference
from genevolve.renderers import RenderError, make_renderer, render_with_report
from genevolve.renderers.gemini import DEFAULT_MODEL, GeminiRenderer, nearest_aspect
from helpers.local_http import serve

PHOTOS = Path(skimage.data.__file__).parent


def _png_b64(size=(64, 48), color=(200, 40, 40)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _image_answer(size=(64, 48)) -> dict:
    return {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "Here is your poster."},
        {"inlineData": {"mimeType": "image/png", "data": _png_b64(size)}}]}, "finishReason": "STOP"}]}


class FakeGemini(BaseHTTPRequestHandler):
    """Answers from a script: each entry is (status, body-bytes, headers)."""

    script: list = []
    requests: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "key": self.headers.get("x-goog-api-key"), "body": body})
        status, data, headers = type(self).script.pop(0)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def fake(monkeypatch):
    with serve(FakeGemini) as server:
        FakeGemini.script, FakeGemini.requests = [], []
        monkeypatch.setenv("GEMINI_BASE_URL", server.url)
        monkeypatch.setenv("GEMINI_API_KEY", "test-key")
        monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
        yield FakeGemini


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


PROGRAM = Program(
    gen_prompt='A cafe poster built around the first reference image, title "OPEN"',
    reference_images=[Reference(img_id="IMG_001", path=str(PHOTOS / "coffee.png"))],
    constraints=[Constraint(kind="text", text="OPEN")],
)


def test_success_sends_prompt_references_and_aspect(fake):
    fake.script = [(200, _json(_image_answer((80, 60))), {"Content-Type": "application/json"})]
    renderer = make_renderer("gemini")
    image, report = render_with_report(renderer, PROGRAM, size=(640, 480), seed=9)
    assert image.size == (640, 480)  # an explicit size is honoured exactly
    assert report["backend"] == f"gemini:{DEFAULT_MODEL}" and report["generated_size"] == [80, 60]
    assert report["model_text"] == "Here is your poster." and report["attempts"] == 1
    req = fake.requests[0]
    assert req["path"] == f"/v1beta/models/{DEFAULT_MODEL}:generateContent" and req["key"] == "test-key"
    parts = req["body"]["contents"][0]["parts"]
    assert parts[0]["text"] == PROGRAM.gen_prompt
    ref = Image.open(io.BytesIO(base64.b64decode(parts[1]["inline_data"]["data"])))
    assert ref.size == Image.open(PHOTOS / "coffee.png").size and parts[1]["inline_data"]["mime_type"] == "image/jpeg"
    config = req["body"]["generationConfig"]
    assert config["imageConfig"]["aspectRatio"] == "4:3" and config["seed"] == 9 and "IMAGE" in config["responseModalities"]


def test_429_then_success_is_retried(fake):
    fake.script = [
        (429, _json({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow down"}}), {"Retry-After": "0"}),
        (503, b"upstream busy", {}),
        (200, _json(_image_answer()), {}),
    ]
    renderer = GeminiRenderer("gemini-2.5-flash-image", backoff_s=0.01)
    image = renderer.render(PROGRAM)
    assert image.size == (64, 48)  # no size asked: Gemini's own pixels
    assert renderer.last_info["attempts"] == 3 and len(fake.requests) == 3
    assert fake.requests[0]["path"].endswith("gemini-2.5-flash-image:generateContent")


def test_malformed_bodies_are_clear_errors(fake):
    fake.script = [(200, b"<html>proxy error</html>", {})]
    with pytest.raises(RenderError, match="not JSON"):
        GeminiRenderer(backoff_s=0.01).render(PROGRAM)
    fake.script = [(200, _json({"candidates": [{"content": {"parts": [{"text": "I cannot draw that."}]},
                                                 "finishReason": "SAFETY"}]}), {})]
    with pytest.raises(RenderError, match=r"no image \(finishReason='SAFETY', text: 'I cannot draw that.'"):
        GeminiRenderer(backoff_s=0.01).render(PROGRAM)
    fake.script = [(200, _json({"promptFeedback": {"blockReason": "OTHER"}}), {})]
    with pytest.raises(RenderError, match="no candidates.*blockReason"):
        GeminiRenderer(backoff_s=0.01).render(PROGRAM)
    bad_image = _image_answer()
    bad_image["candidates"][0]["content"]["parts"][1]["inlineData"]["data"] = "bm90IGFuIGltYWdl"
    fake.script = [(200, _json(bad_image), {})]
    with pytest.raises(RenderError, match="did not contain a decodable image"):
        GeminiRenderer(backoff_s=0.01).render(PROGRAM)


def test_rejected_key_is_not_retried(fake):
    fake.script = [(403, _json({"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "API key not valid"}}), {})]
    with pytest.raises(RenderError, match="HTTP 403 PERMISSION_DENIED API key not valid \\(check the API key\\)"):
        GeminiRenderer(backoff_s=0.01).render(PROGRAM)
    assert len(fake.requests) == 1


def test_retries_give_up_with_the_last_errors(fake):
    fake.script = [(500, b"boom", {})] * 3
    with pytest.raises(RenderError, match="failed after 3 attempts: HTTP 500"):
        GeminiRenderer(retries=2, backoff_s=0.01).render(PROGRAM)


def test_no_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(RenderError, match="needs an API key: set GEMINI_API_KEY .*--renderer layout"):
        make_renderer("gemini").render(PROGRAM)
    monkeypatch.setenv("GOOGLE_API_KEY", "other")  # the alternative name counts too
    assert GeminiRenderer()._api_key() == "other"


def test_nearest_aspect():
    assert nearest_aspect(1024, 1024) == "1:1" and nearest_aspect(768, 1024) == "3:4"
    assert nearest_aspect(1920, 1080) == "16:9" and nearest_aspect(2520, 1080) == "21:9"
