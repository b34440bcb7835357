"""One way for a test to run a real HTTP server on 127.0.0.1: ``serve(Handler)``.

Every fake in the suite (a chat endpoint, a renderer service, a Gemini-shaped API, image hosts, a
Serper stand-in) is a ``BaseHTTPRequestHandler`` subclass that speaks the real wire protocol; this
module starts it on a free port in a daemon thread and always shuts it down and closes its socket.
An ASGI app (the renderer service) runs the same way under uvicorn with ``ThreadedServer(app)``.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


class QuietHandler(BaseHTTPRequestHandler):
    """A handler that does not print a line per request into the test output."""

    def log_message(self, *args):
        pass


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler], *, poll_interval: float = 0.05,
          tls: tuple[str, str] | None = None) -> Iterator[ThreadingHTTPServer]:
    """The server, listening on 127.0.0.1 (``server.url`` is its ``http://127.0.0.1:PORT``);
    ``tls=(cert, key)`` serves HTTPS with that certificate (``server.url`` then says https)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    scheme = "http"
    if tls is not None:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        scheme = "https"
    httpd.url = f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedServer:
    """uvicorn in a background thread, stopped at teardown."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
