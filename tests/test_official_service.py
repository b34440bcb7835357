"""The service: renderer speaks to services shaped like the official release's (127.0.0.1)."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from genevolve.program import Program, Reference
from genevolve.renderers import make_renderer
from genevolve.renderers.base import RenderError
from genevolve.renderers.service import official_size


@pytest.fixture
def service():
    """A service answering ``{"success": true, "image_base64": ...}`` at the size asked."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            buf = io.BytesIO()
            Image.new("RGB", (body["width"], body["height"]), (0, 120, 0)).save(buf, "PNG")
            key = "image" if "use the image key" in body["prompt"] else "image_base64"
            out = json.dumps({"success": True, key: base64.b64encode(buf.getvalue()).decode()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def _program(tmp_path, size=(1200, 700)):
    ref = tmp_path / "ref.jpg"
    Image.new("RGB", size, (9, 9, 9)).save(ref)
    return Program(gen_prompt="The bridge of the first reference image at night.",
                   reference_images=[Reference(img_id="IMG_001", path=str(ref))])


def test_image_base64_replies_official_size_and_images_per_prompt(service, tmp_path):
    url, seen = service
    image = make_renderer(f"service:{url}?size=official&num_images_per_prompt=2").render(_program(tmp_path))
    # 1024 on the long side in the reference's 1200:700 aspect, multiples of 16.
    assert image.size == (1024, 592) == official_size([(1200, 700)])
    body = seen[-1]
    assert body["num_images_per_prompt"] == 2 and (body["width"], body["height"]) == (1024, 592)
    assert body["image_urls"][0].startswith("data:image/") and body["negative_prompt"] == " "
    assert (body["num_inference_steps"], body["true_cfg_scale"], body["guidance_scale"]) == (40, 4.0, 1.0)
    # Without a reference: square 1024. Our own default stays ours (about 1 MP, from the prompt).
    square = make_renderer(f"service:{url}?size=official").render(Program(gen_prompt="A plain poster, use the image key"))
    assert square.size == (1024, 1024) and seen[-1]["num_images_per_prompt"] == 1
    ours = make_renderer(f"service:{url}").render(_program(tmp_path, (800, 800)))
    assert ours.size == (1024, 1024)


def test_bad_service_options_are_clear():
    with pytest.raises(RenderError, match="unknown service option"):
        make_renderer("service:http://127.0.0.1:9?sizes=official")
    with pytest.raises(RenderError, match="size must be 'ours' or 'official'"):
        make_renderer("service:http://127.0.0.1:9?size=huge")
    with pytest.raises(RenderError, match="whole number"):
        make_renderer("service:http://127.0.0.1:9?num_images_per_prompt=two")


def test_official_size_rounding():
    assert official_size([(500, 1000)]) == (512, 1024)
    assert official_size([(3000, 10)]) == (1024, 16)
    assert official_size([]) == (1024, 1024)
