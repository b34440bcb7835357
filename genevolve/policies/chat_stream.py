"""A lean client for OpenAI-compatible ``/chat/completions`` endpoints: the policy's hot path.

Why not the openai SDK here: on every round it transforms the whole message list and, when
streaming, builds a pydantic object per SSE chunk; measured against a loopback server that was
most of a round's cost (see docs/bench/runtime.md). This client keeps one pooled ``httpx``
connection per endpoint and picks the two fields it needs (delta text, finish reason) out of each
chunk's JSON.

Per streamed event, the layers above the connection cost more than the event itself (a chat
endpoint sends one event per token or so), so the hot path is kept short: requests go straight to
the pool ``httpx.Client`` picked for the URL (its proxy from the environment, or the direct pool),
without the client's per-request cookie, auth and redirect handling that a chat endpoint never
uses; the body is split into events here (``_sse_data``) rather than through ``httpx-sse``'s
text and line iterators, and each event is parsed with orjson. One streamed turn of ~40 events,
measured back to back: ~1.8 -> ~1.0 ms CPU (docs/bench/runtime.md, "Round 2").

What it still does like the SDK: retries connection failures and 408/409/429/5xx answers
(honouring ``retry-after-ms`` / ``retry-after``, else exponential backoff) before any text has
arrived; never after, because a turn cannot be resumed. Every failure is a one-line
``ChatEndpointError`` that says what happened and what to do.

The turn end is found on the fly: given ``end_at`` strings (the agent's ``</tool_call>`` and
``</answer>``), the client stops reading once one has been generated — for a server that ignores
``stop``, or a profile that sends none — yields it, and closes the response, which also tells an
inference server to stop generating.
"""

from __future__ import annotations

import json
import random
import re
import time
from contextlib import closing
from typing import Iterator, Sequence

from genevolve.policies.base import PolicyError

try:  # one JSON parse per streamed event: orjson takes ~1 us where json takes ~6
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is in requirements.txt
    _fast_loads = json.loads

RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
MAX_RETRY_AFTER_S = 60.0


class ChatEndpointError(PolicyError):
    """The endpoint could not produce the turn; the message is one line a person can act on."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


MAX_REPLY_BYTES = 16 * 1024 * 1024  # a whole (non-streamed) completion; more is a broken server


class ChatStreamClient:
    """``stream(body)`` yields content deltas; ``complete(body)`` returns the whole content."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 120.0, max_retries: int = 2,
                 connect_timeout: float = 10.0, deadline: float | None = None):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.timeout = timeout
        # Wall-clock limit of one whole answer: per-read timeouts never fire on a server that sends
        # a keep-alive or a byte every few seconds. Default: five read timeouts, at least 10 min.
        self.deadline = deadline if deadline is not None else max(600.0, 5 * timeout)
        self.max_retries = max(0, int(max_retries))
        self._httpx = httpx
        # One pool per endpoint, shared by every thread of the policy: parallel trajectories keep
        # their keep-alive connections instead of paying a TCP (and TLS) handshake per round.
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, connect_timeout)),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self._url = httpx.URL(self.url)
        # The pool the client would send this URL through (a proxy mount from the environment, or
        # its own pool); None on an httpx without that lookup: then requests go through the client.
        pick = getattr(self._http, "_transport_for_url", None)
        self._transport = pick(self._url) if callable(pick) else None
        self._timeouts = self._http.timeout.as_dict()
        # The client's default headers (User-Agent, Accept-Encoding, ...) with ours, built once.
        # A stream is asked for uncompressed, so its bytes are the events as they come.
        common = {**self._http.headers, "content-type": "application/json"}  # httpx's keys are lower case
        self._headers = {
            False: list(common.items()),
            True: list({**common, "accept": "text/event-stream", "accept-encoding": "identity"}.items()),
        }

    # ------------------------------------------------------------------ public

    def stream(self, body: dict, end_at: Sequence[str] = ()) -> Iterator[str]:
        """Yield the reply's text deltas, up to and including the first ``end_at`` string; raise
        ``ChatEndpointError`` on any failure."""
        body = {**body, "stream": True}
        with closing(self._open(body, stream=True)) as response:
            content_type = response.headers.get("content-type", "")
            if "json" in content_type:
                # A server that does not stream answers with the whole completion: take it whole.
                yield from filter(None, [_TurnEnd(end_at).cut(self._content(response))])
                return
            if "text/event-stream" not in content_type:
                raise ChatEndpointError(f"{self.base_url} answered a stream request with "
                                        f"{content_type or 'no content type'!r}, not an event stream "
                                        "(is the base URL an OpenAI-compatible /v1 endpoint?)")
            # Uncompressed (as asked): the transport's bytes as they arrive; else decoded by httpx.
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            chunks = response.stream if encoding in ("", "identity") else response.iter_bytes()
            chunks = _until(chunks, time.monotonic() + self.deadline, self.deadline, self.base_url)
            # The server was asked for at most max_tokens: past that (one delta per token, or ~32
            # characters a token for a server that sends large deltas) the turn is over, whatever
            # the server keeps sending.
            cap = body.get("max_tokens") or body.get("max_completion_tokens")
            max_deltas = int(cap) if cap else None
            max_chars = int(cap) * 32 if cap else None
            deltas = 0
            turn_end = _TurnEnd(end_at)
            sent = 0
            finish = None
            done = False
            try:
                for data in _sse_data(chunks):
                    if done or data == b"[DONE]":
                        # Read on to the end of the body: only a fully read response returns its
                        # connection to the pool (else every round pays a new TCP connect).
                        done = True
                        continue
                    delta, reason = _parse_chunk(data, self.base_url)
                    if reason:
                        finish = reason
                    if not delta:
                        continue
                    deltas += 1
                    if max_chars is not None and sent + len(delta) > max_chars:
                        delta = delta[: max(0, max_chars - sent)]
                    out, ended = turn_end.feed(delta)
                    if out:
                        sent += len(out)
                        yield out
                    if ended:  # the turn is complete; whatever the model adds after it is not read
                        return
                    if max_deltas is not None and (deltas >= max_deltas or sent >= max_chars):
                        return  # the token cap it asked for: stop reading (the connection is dropped)
            except self._httpx.TransportError as exc:
                if isinstance(exc, self._httpx.TimeoutException):
                    raise ChatEndpointError(f"{self.base_url} stopped sending for {self.timeout:g} s after "
                                            f"{sent} characters (timeout)") from exc
                raise ChatEndpointError(f"the stream from {self.base_url} broke off after {sent} characters: "
                                        f"{type(exc).__name__}") from exc
            if finish is None:
                raise ChatEndpointError(f"the stream from {self.base_url} ended before the turn was complete "
                                        "(no finish_reason)")

    def complete(self, body: dict, end_at: Sequence[str] = ()) -> str:
        """The reply text of a non-streaming request, up to and including the first ``end_at`` string."""
        # No "stream" field at all: an OpenAI-compatible server answers whole by default, and the
        # body is then exactly what the openai SDK sends (the official runtime's requests).
        body = {k: v for k, v in body.items() if k != "stream"}
        with closing(self._open(body, stream=False)) as response:
            return _TurnEnd(end_at).cut(self._content(response))

    def _content(self, response) -> str:
        """The message text of a whole (non-streamed) completion."""
        buf = bytearray()
        try:
            for chunk in _until(response.iter_bytes(), time.monotonic() + self.deadline, self.deadline,
                                self.base_url):
                buf.extend(chunk)
                if len(buf) > MAX_REPLY_BYTES:
                    raise ChatEndpointError(f"{self.base_url} answered more than {MAX_REPLY_BYTES:,} bytes; "
                                            "a chat completion is never that long")
        except self._httpx.TransportError as exc:
            raise ChatEndpointError(f"{self.base_url} dropped the connection mid-answer: "
                                    f"{type(exc).__name__}") from exc
        try:
            payload = json.loads(bytes(buf))
        except ValueError as exc:
            raise ChatEndpointError(f"{self.base_url} answered something that is not JSON: "
                                    f"{bytes(buf[:120]).decode('utf-8', 'replace')!r}") from exc
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not choices:
            raise ChatEndpointError(f"{self.base_url} returned no choices")
        message = choices[0].get("message") or {}
        return message.get("content") or ""

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ request with retries

    def _open(self, body: dict, stream: bool):
        """An open response with status 200 (the caller closes it), after retries."""
        httpx = self._httpx
        content = json.dumps(body, ensure_ascii=False).encode()
        attempt = 0
        while True:
            request = httpx.Request("POST", self._url, headers=self._headers[stream], content=content,
                                    extensions={"timeout": self._timeouts})
            try:
                if self._transport is not None:
                    response = self._transport.handle_request(request)
                    response.request = request
                else:
                    response = self._http.send(request, stream=True)
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout) and attempt < self.max_retries:
                    attempt += 1
                    time.sleep(_backoff(attempt, None))
                    continue
                raise ChatEndpointError(_timeout_reason(exc, self.base_url, self.timeout)) from exc
            except httpx.TransportError as exc:
                if attempt < self.max_retries:
                    attempt += 1
                    time.sleep(_backoff(attempt, None))
                    continue
                raise ChatEndpointError(_connect_reason(exc, self.base_url)) from exc
            if response.status_code == 200:
                return response
            try:
                response.read()
            except httpx.TransportError:
                pass
            finally:
                response.close()
            status = response.status_code
            if status in RETRYABLE_STATUS and attempt < self.max_retries:
                attempt += 1
                time.sleep(_backoff(attempt, response.headers))
                continue
            raise ChatEndpointError(_status_reason(response, self.base_url, attempt), status=status)


# ---------------------------------------------------------------------- chunk parsing

def _until(chunks, stop_at: float, deadline: float, base_url: str) -> Iterator[bytes]:
    """The chunks as they come, until the wall clock passes ``stop_at``: a keep-alive or a dripped
    byte arrives as a chunk, so a server that never finishes is cut off on time."""
    for chunk in chunks:
        if time.monotonic() > stop_at:
            raise ChatEndpointError(f"{base_url} sent no complete answer within {deadline:g} s (deadline)")
        yield chunk


def _sse_data(chunks) -> Iterator[bytes]:
    """The data of each server-sent event in a byte stream cut anywhere (the event-stream format:
    lines end in LF, CRLF or CR; ``:`` starts a comment; an event's ``data`` lines are joined by
    LF; a blank line ends the event; an unfinished event at the end is dropped). The other fields
    (``event``, ``id``, ``retry``) mean nothing to a chat-completions stream and are skipped."""
    buf = b""
    data: list[bytes] = []
    for chunk in chunks:
        buf = buf + chunk if buf else chunk
        if b"\r" in buf:
            # A CR at the very end may be the first half of a CRLF: it stays for the next chunk.
            cut = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
            buf = buf[:cut].replace(b"\r\n", b"\n").replace(b"\r", b"\n") + buf[cut:]
        if b"\n" not in buf:
            continue
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if not line:
                if data:
                    yield data[0] if len(data) == 1 else b"\n".join(data)
                    data = []
            elif line.startswith(b"data"):
                value = line[4:]
                if value[:1] == b":":
                    value = value[2:] if value[1:2] == b" " else value[1:]
                    data.append(value)
                elif not value:  # "data" alone: an empty data line
                    data.append(b"")


def _parse_chunk(data: bytes, base_url: str) -> tuple[str, str | None]:
    """(delta text, finish reason) of one ``chat.completion.chunk``; an error event raises."""
    try:
        chunk = _fast_loads(data)
    except ValueError:
        try:  # what orjson refuses and json reads (a lone surrogate escape in the text)
            chunk = json.loads(data)
        except ValueError as exc:
            text = data.decode("utf-8", "replace")
            raise ChatEndpointError(f"{base_url} sent an event that is not JSON: {text[:80]!r}") from exc
    if not isinstance(chunk, dict):
        return "", None
    if chunk.get("error"):
        err = chunk["error"]
        message = err.get("message") if isinstance(err, dict) else str(err)
        raise ChatEndpointError(f"{base_url} reported an error mid-stream: {_first_line(message)}")
    choices = chunk.get("choices")
    if not choices:
        return "", None  # usage-only and keep-alive chunks
    choice = choices[0]
    delta = choice.get("delta") or {}
    return delta.get("content") or "", choice.get("finish_reason")


class _TurnEnd:
    """Finds the first end string in a stream of deltas, also when it is split across deltas."""

    def __init__(self, ends: Sequence[str]):
        self.ends = tuple(e for e in ends if e)
        self._tail = ""  # the end of what was already passed on: an end string may start in it
        self._keep = max(map(len, self.ends), default=1) - 1
        # Most deltas contain no character an end string starts with: one regex search decides.
        starts = "".join({e[0] for e in self.ends})
        self._starts = re.compile("[" + re.escape(starts) + "]") if starts else None

    def feed(self, delta: str) -> tuple[str, bool]:
        """(the part of ``delta`` to pass on, whether the turn ended in it)."""
        if self._starts is None:
            return delta, False
        text = self._tail + delta
        if self._starts.search(text):
            stop = self._end_of_first(text)
            if stop >= 0:
                return delta[:stop - len(self._tail)], True
        self._tail = text[-self._keep:] if self._keep else ""
        return delta, False

    def cut(self, text: str) -> str:
        stop = self._end_of_first(text) if self.ends else -1
        return text[:stop] if stop >= 0 else text

    def _end_of_first(self, text: str) -> int:
        found = [(i, i + len(e)) for e in self.ends if (i := text.find(e)) >= 0]
        return min(found)[1] if found else -1


# ---------------------------------------------------------------------- retries and messages

def _backoff(attempt: int, headers) -> float:
    """Seconds before retry ``attempt``: the server's retry-after when it gives one, else 0.5·2^n ±25%."""
    if headers is not None:
        for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
            value = headers.get(name)
            if value:
                try:
                    seconds = float(value) * scale
                except ValueError:
                    continue
                if 0 <= seconds <= MAX_RETRY_AFTER_S:
                    return seconds
    return min(0.5 * 2 ** (attempt - 1), 8.0) * random.uniform(0.75, 1.25)


def _first_line(text) -> str:
    text = str(text or "").strip()
    return text.splitlines()[0] if text else ""


def _error_message(response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return _first_line(response.text)[:200]
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        return _first_line(err.get("message"))
    if err:
        return _first_line(err)
    if isinstance(payload, dict) and payload.get("detail"):  # FastAPI-style servers
        return _first_line(payload["detail"])
    return _first_line(response.text)[:200]


def _status_reason(response, base_url: str, retries: int) -> str:
    status = response.status_code
    message = _error_message(response)
    if status == 401:
        return f"{base_url} refused the API key (401): check OPENAI_API_KEY"
    if status == 403:
        return f"{base_url} denied access (403): {message or 'check the key and the model name'}"
    if status == 404:
        return (f"{base_url} answered 404: {message or 'not found'} (check the model name and that the base URL "
                "ends in /v1)")
    after = f" after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
    return f"{base_url} answered {status}{after}: {message}".rstrip(": ")


def _connect_reason(exc: Exception, base_url: str) -> str:
    detail = _first_line(exc)
    return f"cannot reach {base_url}: {type(exc).__name__}: {detail}".rstrip(": ")


def _timeout_reason(exc: Exception, base_url: str, timeout: float) -> str:
    if type(exc).__name__ == "ConnectTimeout":
        return f"cannot reach {base_url}: the connection timed out (is the server up?)"
    return f"{base_url} did not answer in time ({timeout:g} s timeout)"
