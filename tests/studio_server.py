"""Starts the real studio (`python app.py`) on a free 127.0.0.1 port with a private GENEVOLVE_HOME.

Used by the browser tests and by benchmarks/studio_latency.py. The server is a subprocess, so
the test talks to exactly what a user runs; its output goes to a log file shown on failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = REPO / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_studio(home: Path, *, timeout_s: float = 120, env: dict | None = None):
    """Yield the base URL of a freshly started studio; stop it (and its children) afterwards."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "studio.log"
    full_env = dict(os.environ, GENEVOLVE_HOME=str(home), GRADIO_SERVER_NAME="127.0.0.1",
                    GRADIO_SERVER_PORT=str(port), GENEVOLVE_OFFLINE="1", HF_HUB_OFFLINE="1",
                    TRANSFORMERS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
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
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
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
    """A running studio for one test module: (url, its GENEVOLVE_HOME)."""
    need_chromium()
    home = tmp_path_factory.mktemp("studio_home")
    with running_studio(home) as url:
        yield url, home
