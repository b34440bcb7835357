"""The service: renderer speaks to services shaped like the official release's (127.0.0.1)."""

from __future__ import annotations

import base64
import io
import json
from http.server import BaseHTTPRequestHandler

import pytest
from PIL import Image

from genevolve.program import Program, Reference
from genevolve.renderers import make_renderer
from genevolve.renderers.base import RenderError
from genevolve.renderers.service import official_size
from helpers.local_http import serve


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

    with serve(Handler) as server:
        yield server.url, seen


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
    assert body["negative_prompt"] == " "
    assert (body["num_inference_steps"], body["true_cfg_scale"], body["guidance_scale"]) == (40, 4.0, 1.0)
    # The reference file's bytes as they are, labelled as the official client labels them.
    assert body["image_urls"] == ["data:image/jpeg;base64," + base64.b64encode((tmp_path / "ref.jpg").read_bytes()).decode()]
    # Without a reference the official client sends nothing; neither do we.
    sent = len(seen)
    with pytest.raises(RenderError, match="sends none without a reference image"):
        make_renderer(f"service:{url}?size=official").render(Program(gen_prompt="A plain poster, use the image key"))
    assert len(seen) == sent
    # Our own default stays ours (about 1 MP, from the prompt; references re-encoded).
    ours = make_renderer(f"service:{url}").render(_program(tmp_path, (800, 800)))
    assert ours.size == (1024, 1024)
    square = make_renderer(f"service:{url}").render(Program(gen_prompt="A plain poster, use the image key"))
    assert seen[-1]["image_urls"] == [] and square.size[0] > 0


def test_official_payload_keeps_png_alpha_and_size_untouched(service, tmp_path):
    url, seen = service
    ref = tmp_path / "big.png"
    Image.new("RGBA", (2000, 1000), (10, 20, 30, 100)).save(ref)
    program = Program(gen_prompt="The first reference image.", reference_images=[
        Reference(img_id=f"IMG_00{i}", path=str(ref)) for i in range(1, 6)])
    make_renderer(f"service:{url}?size=official").render(program)
    urls = seen[-1]["image_urls"]
    assert len(urls) == 4  # at most 4 references, as the official client
    sent = Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1])))
    assert (sent.format, sent.mode, sent.size) == ("PNG", "RGBA", (2000, 1000))
    make_renderer(f"service:{url}").render(program)
    ours = Image.open(io.BytesIO(base64.b64decode(seen[-1]["image_urls"][0].split(",", 1)[1])))
    assert ours.format == "JPEG" and max(ours.size) <= 1536


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
