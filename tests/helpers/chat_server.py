"""A real OpenAI chat-completions server on 127.0.0.1 with scripted replies, for tests and benchmarks.

It speaks the wire protocol the ``openai`` client expects — ``POST /v1/chat/completions``, streaming
(SSE over chunked HTTP/1.1, ending with ``data: [DONE]``) and non-streaming — plus
``GET /v1/models``. Like vLLM it honours ``stop`` strings by cutting the reply before the first
one (the stop string itself is not returned).

Usage::

    from helpers.chat_server import ChatServer, Reply

    with ChatServer(["<think>hi</think><answer>{...}</answer>"]) as server:
        client = OpenAI(base_url=server.base_url, api_key="EMPTY")
        ...
        server.requests  # every request body received, in order

Replies are either a list, consumed one per request (a ``str`` or a ``Reply``), or a callable
``reply(body: dict) -> str | Reply`` deciding from the request itself (useful when many
conversations run in parallel). ``Reply`` adds per-reply failure modes:

- ``Reply(status=429)`` / ``Reply(status=503)``: an OpenAI-style error body with a short
  ``retry-after-ms``, so the client's retry logic runs quickly;
- ``Reply(text, die_after=20)``: stream 20 characters, then drop the connection mid-stream;
- ``Reply(text, latency=0.2)``: wait before answering (``ChatServer(latency=...)`` sets a default).

When a list runs out, the server answers 500 "no scripted reply left".
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, Union

__all__ = ["ChatServer", "Reply"]


@dataclass
class Reply:
    content: str = ""
    status: int = 200
    latency: float | None = None
    die_after: int | None = None  # streaming only: characters sent before the connection drops
    retry_after_ms: int = 5


ReplySource = Union[Iterable[Union[str, Reply]], Callable[[dict], Union[str, Reply]]]


class ChatServer:
    def __init__(self, replies: ReplySource = (), *, latency: float = 0.0, chunk_size: int = 6,
                 model: str = "scripted", honour_stop: bool = True):
        self._responder = replies if callable(replies) else None
        self._queue: list[str | Reply] = [] if callable(replies) else list(replies)
        self.latency = latency
        self.chunk_size = max(1, chunk_size)
        self.model = model
        self.honour_stop = honour_stop
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "start() the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> "ChatServer":
        handler = type("_Handler", (_Handler,), {"chat": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "ChatServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def add(self, *replies: str | Reply) -> None:
        """Append scripted replies to the queue."""
        with self._lock:
            self._queue.extend(replies)

    # ------------------------------------------------------------------ internals

    def _next_reply(self, body: dict) -> Reply:
        with self._lock:
            self.requests.append(body)
            if self._responder is not None:
                item = self._responder(body)
            elif self._queue:
                item = self._queue.pop(0)
            else:
                return Reply(status=500, content="no scripted reply left")
        return item if isinstance(item, Reply) else Reply(content=str(item))


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        # Clients dropping idle keep-alive connections is normal; anything else is printed.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small SSE writes would otherwise wait ~40 ms for delayed ACKs
    chat: ChatServer  # set per server by ChatServer.start

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": self.chat.model, "object": "model"}]})
        else:
            self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        reply = self.chat._next_reply(body)
        delay = reply.latency if reply.latency is not None else self.chat.latency
        if delay:
            time.sleep(delay)
        if reply.status != 200:
            kind = "rate_limit_error" if reply.status == 429 else "server_error"
            self._json(reply.status, {"error": {"message": reply.content or kind, "type": kind}},
                       {"retry-after-ms": str(reply.retry_after_ms)})
            return
        text, finish = reply.content, "stop"
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        if self.chat.honour_stop and stops:
            cuts = [text.find(s) for s in stops if s and s in text]
            if cuts:
                text = text[: min(cuts)]
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        if body.get("stream"):
            self._stream(completion_id, text, finish, reply.die_after)
        else:
            self._json(200, {
                "id": completion_id, "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", self.chat.model),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish}],
                "usage": {"prompt_tokens": 0, "completion_tokens": len(text.split()), "total_tokens": 0},
            })

    def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, completion_id: str, text: str, finish: str, die_after: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def event(delta: dict, finish_reason: str | None = None) -> None:
            chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": self.chat.model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())

        event({"role": "assistant", "content": ""})
        size = self.chat.chunk_size
        sent = 0
        for i in range(0, len(text), size):
            if die_after is not None and sent >= die_after:
                self._die()
                return
            piece = text[i:i + size]
            event({"content": piece})
            sent += len(piece)
        if die_after is not None:
            self._die()
            return
        event({}, finish)
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _die(self) -> None:
        """Drop the connection without ending the chunked body: a server crash, as the client sees it."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
