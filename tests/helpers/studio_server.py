"""Starts the real studio (`python app.py`) on a free 127.0.0.1 port with a private GENEVOLVE_HOME.

Used by the browser tests and by benchmarks/studio_latency.py. The server is a subprocess, so
the test talks to exactly what a user runs; its output goes to a log file shown on failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = REPO / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_studio(home: Path, *, timeout_s: float = 300, env: dict | None = None):
    """Yield the base URL of a freshly started studio; stop it (and its children) afterwards."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "studio.log"
    full_env = dict(os.environ, GENEVOLVE_HOME=str(home), GRADIO_SERVER_NAME="127.0.0.1",
                    GRADIO_SERVER_PORT=str(port), GENEVOLVE_OFFLINE="1", HF_HUB_OFFLINE="1",
                    TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=full_env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the studio exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"the studio did not answer within {timeout_s}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        _stop_jobs(home)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _stop_jobs(home: Path) -> None:
    """Background jobs run in their own process groups: end the ones this studio started."""
    import sqlite3

    db_path = home / "genevolve.db"
    if not db_path.exists():
        return
    db = sqlite3.connect(db_path)
    try:
        pids = [r[0] for r in db.execute("SELECT pid FROM jobs WHERE pid IS NOT NULL")]
    except sqlite3.Error:
        pids = []
    finally:
        db.close()
    for pid in pids:
        try:  # only a process that is still that job (its pid may have been reused since)
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if f"GENEVOLVE_HOME={home}".encode() not in environ.split(b"\0"):
            continue
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def need_chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (scripts/setup-tests.sh does) "
                    "to run the studio browser tests")


@contextmanager
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def shot(page, name: str, docs: bool = False) -> Path:
    """Save a screenshot to test-artifacts/ (and to docs/images/ when asked)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"studio_{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if docs and os.environ.get("GENEVOLVE_UPDATE_DOC_IMAGES") == "1":
        dest = REPO / "docs" / "images"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / path.name)
    return path


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A running studio with default settings for one test module: (url, its GENEVOLVE_HOME)."""
    need_chromium()
    home = tmp_path_factory.mktemp("studio_home")
    with running_studio(home) as url:
        yield url, home


@pytest.fixture(scope="session")
def light_studio(tmp_path_factory):
    """A studio whose settings file ranks library images by BM25 only (no embedding model to load),
    for tests about the UI rather than image retrieval. Shared by the studio test modules (tests
    filter by their own session ids, which is what the studio promises anyway)."""
    need_chromium()
    home = tmp_path_factory.mktemp("studio_home")
    cfg = home / "studio.yaml"
    cfg.write_text("extra:\n  library_embeddings: false\n")
    with running_studio(home, env={"GENEVOLVE_STUDIO_CONFIG": str(cfg)}) as url:
        yield url, home


class SlowOpenAIHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint (real SSE wire format) whose turns come from the planner,
    streamed slowly — so a run is long enough to watch and to stop."""

    delay_s = 0.05

    def log_message(self, *args):
        pass

    def do_POST(self):
        from genevolve.policies.planner import PlannerPolicy

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        messages = []
        for m in body["messages"]:
            content = m["content"]
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if p.get("type") == "text")
            messages.append({"role": m["role"], "content": content})
        turn = PlannerPolicy().next_turn(messages)
        for stop in body.get("stop") or []:
            if stop in turn:  # like a real server: generation ends at the stop string, which is dropped
                turn = turn.split(stop, 1)[0]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for i in range(0, len(turn), 12):
                self._chunk({"content": turn[i:i + 12]}, None)
                time.sleep(self.delay_s)
            self._chunk({}, "stop")
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the studio stopped reading: that is what Stop does

    def _chunk(self, delta, finish):
        data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()), "model": "slow",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()


@contextmanager
def slow_openai_server(delay_s: float = 0.05):
    """Serve SlowOpenAIHandler on a free port; yields its base URL (``.../v1``)."""
    handler = type("Handler", (SlowOpenAIHandler,), {"delay_s": delay_s})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def slow_endpoint():
    with slow_openai_server() as url:
        yield url


def open_studio(page, url: str) -> None:
    """Load the studio and wait until its per-browser session id is set (runs are attributed to it)."""
    page.goto(url)
    page.wait_for_selector("#ge-request textarea", timeout=60_000)
    page.wait_for_selector("#ge-session code", timeout=30_000)


def wait_or_explain(page, selector: str, home: Path, timeout: float = 60_000) -> None:
    """``page.wait_for_selector``, but a timeout fails with what the page and the studio said (the
    status line, the live trajectory, the server log's tail) instead of only the selector."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_selector(selector, timeout=timeout)
    except PlaywrightTimeout:
        def text(sel):
            try:
                return page.locator(sel).first.inner_text(timeout=2_000)[-1500:]
            except Exception as exc:  # noqa: BLE001 - a diagnostic must not hide the failure
                return f"(unreadable: {exc})"
        log = home / "studio.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        pytest.fail(f"{selector} did not appear in {timeout / 1000:.0f}s\nstatus: {text('#ge-status')}\n"
                    f"events: {text('#ge-events')}\nstudio log:\n{tail}")


def session_of(page) -> str:
    return page.locator("#ge-session code").inner_text().strip()


def add_sample_guide(home: Path) -> None:
    """Put one Decision Guide into the studio's store the way GRPO+SDL does (real embedder, real buffer)."""
    from genevolve.store import Store
    from genevolve.training.sdl import GuideBuffer, guide_from_json

    guide = guide_from_json({
        "retrieval_key": {"trigger": "poster with an exact headline",
                          "summary": "Requests that need a short title rendered letter for letter on a poster."},
        "decision_guidance": {"tool_plan": ["read text_rendering before writing the program"],
                              "program_writing": ["quote the headline once, exactly as requested"]}},
        source_prompt='A poster with the headline "OPEN LATE"', reward_gap=0.75)
    GuideBuffer(Store(home / "genevolve.db")).add(guide)
