"""One way for a test to run a real HTTP server on 127.0.0.1: ``serve(Handler)``.

Every fake in the suite (a chat endpoint, a renderer service, a Gemini-shaped API, image hosts, a
Serper stand-in) is a ``BaseHTTPRequestHandler`` subclass that speaks the real wire protocol; this
module starts it on a free port in a daemon thread and always shuts it down and closes its socket.
"""

from __future__ import annotations

import threading
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
