"""The renderer service: real uvicorn servers on 127.0.0.1, the real client, the real command."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
import skimage.data
from PIL import Image
from helpers.tiny_diffusers import shared_tiny_sd

from genevolve.program import Constraint, Program, Reference
from genevolve.renderers import RenderError, make_renderer, render_with_report
from genevolve.renderers.service import ServiceRenderer, create_app, renderer_for_pipeline
from helpers.local_http import ThreadedServer, free_port, serve

PHOTOS = Path(skimage.data.__file__).parent
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def diffusers_server(tmp_path_factory):
    path = shared_tiny_sd(tmp_path_factory)
    with ThreadedServer(create_app(renderer_for_pipeline(str(path)), label=str(path))) as srv:
        yield srv


@pytest.fixture(scope="module")
def layout_server():
    with ThreadedServer(create_app(renderer_for_pipeline("layout"))) as srv:
        yield srv


def _ref_program(text="HELLO") -> Program:
    return Program(gen_prompt=f'the first reference image with the word "{text}"',
                   reference_images=[Reference(img_id="IMG_001", path=str(PHOTOS / "chelsea.png"))],
                   constraints=[Constraint(kind="text", text=text)])


def test_tiny_pipeline_renders_through_the_service(diffusers_server):
    health = httpx.get(diffusers_server.url + "/health").json()
    assert health["ok"] is True and health["renderer"].endswith("pipe")
    r = make_renderer(f"service:{diffusers_server.url}")
    r.params["num_inference_steps"] = 2
    image, report = render_with_report(r, _ref_program(), size=(96, 64), seed=3)
    assert image.size == (96, 64)
    assert report["url"] == diffusers_server.url and report["attempts"] == 1
    assert httpx.get(diffusers_server.url + "/health").json()["served"] >= 1


def test_round_robin_and_retry_past_a_dead_url(diffusers_server, layout_server):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    r = ServiceRenderer([dead, layout_server.url, diffusers_server.url], backoff_s=0.01, num_inference_steps=2)
    before = {u: httpx.get(u + "/health").json()["served"] for u in (layout_server.url, diffusers_server.url)}
    image = r.render(_ref_program(), size=(128, 96), seed=0)
    assert image.size == (128, 96) and r.last_info == {"url": layout_server.url, "attempts": 2}
    r.render(_ref_program(), size=(128, 96), seed=0)  # the next URL in turn
    assert r.last_info == {"url": diffusers_server.url, "attempts": 1}
    after = {u: httpx.get(u + "/health").json()["served"] for u in before}
    assert all(after[u] == before[u] + 1 for u in before)


def test_all_urls_dead_is_a_clear_error():
    r = ServiceRenderer([f"http://127.0.0.1:{free_port()}"], retries=1, backoff_s=0.01)
    with pytest.raises(RenderError, match=r"failed after 2 attempts.*serve-renderer"):
        r.render(Program(gen_prompt="x"), size=(64, 64))
    with pytest.raises(RenderError, match="must start with http"):
        make_renderer("service:127.0.0.1:9")


def test_server_refuses_bad_images_with_a_reason(layout_server):
    resp = httpx.post(layout_server.url + "/generate", json={"prompt": "x", "image_urls": ["data:image/png;base64,AAAA"],
                                                              "width": 64, "height": 64})
    assert resp.status_code == 400
    body = resp.json()
    assert body["success"] is False and "image_urls[0]" in body["error"]
    resp = httpx.post(layout_server.url + "/generate", json={"prompt": "x", "image_urls": ["https://example.com/a.png"]})
    assert resp.status_code == 400 and "data: URIs" in resp.json()["error"]


class _CountingUpstream(BaseHTTPRequestHandler):
    """A slow renderer service that records how many requests overlap."""

    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - http.server's naming
        cls = type(self)
        with cls.lock:
            cls.in_flight += 1
            cls.peak = max(cls.peak, cls.in_flight)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        # Hold the answer until a second request arrives (or 5 s pass), so a loaded machine that is
        # slow to start the client's threads still shows the overlap the client allows.
        deadline = time.monotonic() + 5
        while cls.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        buf = io.BytesIO()
        Image.new("RGB", (body["width"], body["height"]), (10, 120, 200)).save(buf, format="PNG")
        data = json.dumps({"success": True, "image": base64.b64encode(buf.getvalue()).decode()}).encode()
        with cls.lock:
            cls.in_flight -= 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_client_concurrency_limit():
    with serve(_CountingUpstream) as server:
        r = ServiceRenderer([server.url], concurrency=2)
        threads = [threading.Thread(target=r.render, args=(Program(gen_prompt="x"), (64, 64))) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert _CountingUpstream.peak == 2


@pytest.mark.slow
def test_serve_renderer_command(tmp_path):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "genevolve.cli", "serve-renderer", "--pipeline", "layout",
                             "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).json()["renderer"] == "layout":
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "serve-renderer did not come up"
            time.sleep(0.2)
        image, report = render_with_report(make_renderer(f"service:{url}"), _ref_program(), size=(320, 240))
        assert image.size == (320, 240) and report["backend"] == f"service:{url}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# ---------------------------------------------------------------- bad input, limits and the token

@pytest.fixture(scope="module")
def guarded_server():
    """A layout service with a bearer token and a 1 MB body cap."""
    with ThreadedServer(create_app(renderer_for_pipeline("layout"), token="s3cret", max_body=1024 * 1024)) as srv:
        yield srv


@pytest.mark.parametrize("body,status,says", [
    ({"prompt": "x", "seed": -1}, 422, "seed: Input should be greater than or equal to 0"),
    ({"prompt": "x", "seed": 2 ** 40}, 422, "seed: Input should be less than or equal to"),
    ({"prompt": "x", "width": 0, "height": 0}, 400, "size 0x0 is out of range"),
    ({"prompt": "x", "width": 512}, 400, "give both width and height"),
    ({"prompt": "x", "width": 99999, "height": 64}, 400, "out of range"),
    ({"prompt": "x", "num_inference_steps": 0}, 422, "num_inference_steps"),
    ({"prompt": "x" * 20_001}, 422, "prompt: String should have at most 20000 characters"),
    ({"prompt": "x", "image_urls": ["data:,"] * 9}, 422, "image_urls"),
    ({"prompt": ["not", "text"]}, 422, "prompt: Input should be a valid string"),
])
def test_bad_requests_are_4xx_with_a_reason(layout_server, body, status, says):
    resp = httpx.post(layout_server.url + "/generate", json=body, timeout=30)
    assert resp.status_code == status, resp.text
    answer = resp.json()
    assert answer["success"] is False and says in answer["error"], answer


def test_a_request_body_over_the_cap_is_refused_before_it_is_read(layout_server, guarded_server):
    # Declared: 100 MB announced, not one body byte sent; the answer comes from the headers alone.
    with socket.create_connection(("127.0.0.1", layout_server.port), timeout=10) as sock:
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000000\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):  # the server closes after its answer; head and body may come apart
            answer += chunk
    answer = answer.decode()
    assert answer.startswith("HTTP/1.1 413") and "byte limit" in answer
    # Chunked, no Content-Length: counted while it arrives.
    headers = {"Authorization": "Bearer s3cret", "Content-Type": "application/json"}
    chunks = (b'{"prompt": "' + b"x" * 65536 for _ in range(40))  # 2.6 MB against a 1 MB cap
    resp = httpx.post(guarded_server.url + "/generate", content=chunks, headers=headers, timeout=30)
    assert resp.status_code == 413 and "1048576-byte limit" in resp.json()["error"]
    # Under the cap it renders.
    resp = httpx.post(guarded_server.url + "/generate", json={"prompt": "a red kite", "width": 64, "height": 64},
                      headers=headers, timeout=60)
    assert resp.status_code == 200 and resp.json()["success"] is True


def test_the_bearer_token_is_required_and_the_client_sends_it(guarded_server, monkeypatch):
    body = {"prompt": "x", "width": 64, "height": 64}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        resp = httpx.post(guarded_server.url + "/generate", json=body, headers=headers, timeout=30)
        assert resp.status_code == 401 and "GENEVOLVE_RENDERER_TOKEN" in resp.json()["error"]
    assert httpx.get(guarded_server.url + "/health").json()["auth"] is True
    monkeypatch.delenv("GENEVOLVE_RENDERER_TOKEN", raising=False)
    with pytest.raises(RenderError, match="wants a bearer token: set GENEVOLVE_RENDERER_TOKEN"):
        make_renderer(f"service:{guarded_server.url}").render(Program(gen_prompt="x"), size=(64, 64))
    monkeypatch.setenv("GENEVOLVE_RENDERER_TOKEN", "wrong")
    with pytest.raises(RenderError, match="the one set was refused"):
        make_renderer(f"service:{guarded_server.url}").render(Program(gen_prompt="x"), size=(64, 64))
    monkeypatch.setenv("GENEVOLVE_RENDERER_TOKEN", "s3cret")
    image = make_renderer(f"service:{guarded_server.url}").render(Program(gen_prompt="x"), size=(96, 64))
    assert image.size == (96, 64)


def test_serve_renderer_refuses_a_bad_port_with_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        for port, says in (("99999", "--port must be 1..65535, got 99999"), (str(taken), "Address already in use")):
            proc = subprocess.run([sys.executable, "-m", "genevolve.cli", "serve-renderer", "--pipeline", "layout",
                                   "--port", port], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2 and len(lines) == 1 and says in lines[0], proc.stderr
