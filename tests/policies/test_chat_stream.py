"""The lean chat-completions client against real HTTP servers on 127.0.0.1.

``chat_server.ChatServer`` speaks the protocol the usual way; ``RawServer`` below writes exact
bytes, so the SSE stream can be split at odd places, carry comments and CRLFs, end early, or
carry an error event — things a real proxy or inference server does.
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler

import pytest

from helpers.chat_server import ChatServer, Reply
from genevolve.policies.chat_stream import ChatEndpointError, ChatStreamClient
from genevolve.policies.openai import OpenAIPolicy
from genevolve.protocol import format_answer, format_tool_call
from helpers.local_http import serve

SEARCH = format_tool_call("search", {"queries": ["Eiffel Tower"]}, think="I need facts")
ANSWER = format_answer({"gen_prompt": 'The tower at dusk, title "PARIS".', "reference_images": []}, think="ready")
STOPS = ["</tool_call>", "</answer>"]


def body(**kw) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": STOPS, **kw}


# ---------------------------------------------------------------------- a byte-exact server

class RawServer:
    """Runs ``script(handler, request_body)`` for every POST; counts TCP connections."""

    def __init__(self, script):
        self.script = script
        self.connections = 0
        self.requests: list[dict] = []

    def __enter__(self) -> "RawServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def setup(self):
                super().setup()
                owner.connections += 1

            def log_message(self, *args):
                pass

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(request)
                owner.script(self, request)

        self._serving = serve(Handler)
        self.httpd = self._serving.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._serving.__exit__(*exc)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


def send_sse(handler, raw: bytes, piece: int = 0, pause_after: int | None = None, pause: float = 0.0) -> None:
    """``raw`` as a chunked text/event-stream body, cut into HTTP chunks of ``piece`` bytes."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    parts = [raw[i:i + piece] for i in range(0, len(raw), piece)] if piece else [raw]
    try:
        for n, part in enumerate(parts):
            handler.wfile.write(f"{len(part):X}\r\n".encode() + part + b"\r\n")
            handler.wfile.flush()
            if pause_after is not None and n + 1 == pause_after:
                time.sleep(pause)
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout tests)
        handler.close_connection = True


def event(content: str | None = None, finish: str | None = None) -> str:
    delta = {} if content is None else {"content": content}
    return "data: " + json.dumps({"object": "chat.completion.chunk",
                                  "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"


# ---------------------------------------------------------------------- streaming

def test_one_character_chunks_and_done_reuse_one_connection():
    with ChatServer([SEARCH] * 3, chunk_size=1) as server:
        client = ChatStreamClient(server.base_url, "EMPTY", timeout=5)
        for _ in range(3):
            deltas = list(client.stream(body()))
            # The server cut the stop string; the client passes on every character in order.
            assert "".join(deltas) == SEARCH[: -len("</tool_call>")]
        assert all(r["stream"] is True and r["stop"] == STOPS for r in server.requests)


def test_events_split_at_odd_bytes_with_comments_crlf_and_multibyte_text():
    text = "<think>Café ☕ at the 東京 tower</think><tool_call>{}"
    raw = (": keep-alive\r\n\r\n" + event("", None).replace("\n", "\r\n")
           + "".join(event(text[i:i + 4]) for i in range(0, len(text), 4))
           + event(None, "stop") + "data: [DONE]\n\n").encode()

    def script(handler, request):
        send_sse(handler, raw, piece=5)  # events, lines and UTF-8 characters all cut apart

    with RawServer(script) as server:
        client = ChatStreamClient(server.base_url, "EMPTY", timeout=5)
        assert "".join(client.stream(body())) == text
        assert "".join(client.stream(body())) == text
        # Reading on past [DONE] to the end of the body kept the connection for the second request.
        assert server.connections == 1


def test_the_client_ends_the_turn_when_the_server_ignores_stop():
    runaway = SEARCH + " and then the model keeps going <answer>{}</answer>"
    with ChatServer([runaway] * 4, chunk_size=5, honour_stop=False) as server:
        client = ChatStreamClient(server.base_url, "EMPTY", timeout=5)
        # Chunks of 5 characters split "</tool_call>" across deltas; it is still found, and kept.
        assert "".join(client.stream(body(), end_at=STOPS)) == SEARCH
        assert client.complete(body(), end_at=STOPS) == SEARCH
        assert "".join(client.stream(body())) == runaway  # without end strings the client reads it all
        # Through the policy the turn is the same as from a server that honours stop.
        policy = OpenAIPolicy("m", server.base_url, timeout=5)
        assert "".join(policy.stream([{"role": "user", "content": "hi"}])) == SEARCH


def test_an_end_string_split_across_many_deltas():
    text = "<think>x</think><answer>{}</answer> trailing"

    def script(handler, request):
        raw = "".join(event(ch) for ch in text) + event(None, "stop") + "data: [DONE]\n\n"
        send_sse(handler, raw.encode())

    with RawServer(script) as server:
        deltas = list(ChatStreamClient(server.base_url, "EMPTY", timeout=5).stream(body(), end_at=STOPS))
    assert "".join(deltas) == "<think>x</think><answer>{}</answer>"
    assert deltas[-1] == ">"  # every character went on as it came; nothing was held back


def test_a_server_that_answers_a_stream_request_whole():
    completion = {"object": "chat.completion",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": SEARCH + " more"},
                               "finish_reason": "stop"}]}

    def script(handler, request):
        data = json.dumps(completion).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    with RawServer(script) as server:
        assert list(ChatStreamClient(server.base_url, "EMPTY", timeout=5).stream(body(), end_at=STOPS)) == [SEARCH]
        assert server.requests[0]["stream"] is True


def test_a_stream_that_ends_without_a_finish_is_an_error():
    def script(handler, request):
        send_sse(handler, (event("<think>half a") + event(" thought")).encode())

    with RawServer(script) as server:
        client = ChatStreamClient(server.base_url, "EMPTY", timeout=5)
        got = []
        with pytest.raises(ChatEndpointError, match="ended before the turn was complete"):
            for d in client.stream(body()):
                got.append(d)
        assert "".join(got) == "<think>half a thought"


def test_an_error_event_mid_stream():
    def script(handler, request):
        send_sse(handler, (event("<think>") + 'data: {"error": {"message": "CUDA out of memory\\nat line 3"}}\n\n'
                           ).encode())

    with RawServer(script) as server:
        with pytest.raises(ChatEndpointError, match=r"reported an error mid-stream: CUDA out of memory$"):
            list(ChatStreamClient(server.base_url, "EMPTY", timeout=5).stream(body()))


def test_a_dropped_connection_mid_stream():
    with ChatServer([Reply(SEARCH, die_after=12)]) as server:
        with pytest.raises(ChatEndpointError, match=r"broke off after 12 characters: RemoteProtocolError"):
            list(ChatStreamClient(server.base_url, "EMPTY", timeout=5, max_retries=0).stream(body()))


# ---------------------------------------------------------------------- HTTP errors and retries

def test_retries_then_succeeds_honouring_retry_after():
    with ChatServer([Reply(status=429, retry_after_ms=50), Reply(status=503), ANSWER]) as server:
        client = ChatStreamClient(server.base_url, "EMPTY", timeout=5, max_retries=2)
        t0 = time.perf_counter()
        assert "".join(client.stream(body())) == ANSWER[: -len("</answer>")]
        assert time.perf_counter() - t0 >= 0.05 and len(server.requests) == 3


def test_persistent_5xx_names_the_status_and_the_retries():
    with ChatServer([Reply(status=503, content="engine overloaded")] * 3) as server:
        client = ChatStreamClient(server.base_url, "EMPTY", timeout=5, max_retries=2)
        with pytest.raises(ChatEndpointError, match=r"answered 503 after 2 retries: engine overloaded$") as err:
            list(client.stream(body()))
        assert err.value.status == 503 and len(server.requests) == 3


@pytest.mark.parametrize("status, message", [
    (401, r"refused the API key \(401\): check OPENAI_API_KEY"),
    (404, r"answered 404: no such model \(check the model name"),
    (400, r"answered 400: no such model$"),
])
def test_client_errors_are_not_retried(status, message):
    with ChatServer([Reply(status=status, content="no such model")] * 3) as server:
        with pytest.raises(ChatEndpointError, match=message):
            ChatStreamClient(server.base_url, "EMPTY", timeout=5, max_retries=2).complete(body())
        assert len(server.requests) == 1


def _html_page(status: int, page: bytes):
    """A RawServer script that answers every request with a web page."""
    def script(handler, request):
        handler.send_response(status)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(page)))
        handler.end_headers()
        handler.wfile.write(page)

    return script


def test_a_proxy_error_page_that_is_not_json():
    with RawServer(_html_page(502, b"<html><body>502 Bad Gateway</body></html>")) as server:
        with pytest.raises(ChatEndpointError, match=r"answered 502: <html><body>502 Bad Gateway"):
            list(ChatStreamClient(server.base_url, "EMPTY", timeout=5, max_retries=0).stream(body()))


def test_connection_refused():
    with pytest.raises(ChatEndpointError, match=r"cannot reach http://127.0.0.1:9/v1: ConnectError"):
        list(ChatStreamClient("http://127.0.0.1:9/v1", "EMPTY", timeout=2, max_retries=0).stream(body()))


# ---------------------------------------------------------------------- timeouts

def test_a_server_that_does_not_answer_in_time():
    with ChatServer([Reply(ANSWER, latency=2.0)]) as server:
        client = ChatStreamClient(server.base_url, "EMPTY", timeout=0.3, max_retries=2)
        t0 = time.perf_counter()
        with pytest.raises(ChatEndpointError, match=r"did not answer in time \(0.3 s timeout\)"):
            list(client.stream(body()))
        assert time.perf_counter() - t0 < 1.5  # a slow answer is not retried three times over
        assert len(server.requests) == 1


def test_a_stream_that_stalls():
    raw = (event("<think>waiting") + event(" for the GPU") + event(None, "stop") + "data: [DONE]\n\n").encode()

    def script(handler, request):
        send_sse(handler, raw, piece=len(event("<think>waiting")), pause_after=1, pause=2.0)

    with RawServer(script) as server:
        got = []
        with pytest.raises(ChatEndpointError, match=r"stopped sending for 0.3 s after 14 characters \(timeout\)"):
            for d in ChatStreamClient(server.base_url, "EMPTY", timeout=0.3).stream(body()):
                got.append(d)
        assert got == ["<think>waiting"]


def test_non_streaming_complete_and_extra_fields():
    with ChatServer([ANSWER + " trailing"]) as server:
        client = ChatStreamClient(server.base_url, "sk-test", timeout=5)
        assert client.complete(body(temperature=0.6, top_p=0.9)) == ANSWER[: -len("</answer>")]
        sent = server.requests[0]
        assert "stream" not in sent and sent["top_p"] == 0.9 and sent["temperature"] == 0.6


# ---------------------------------------------------------------------- the wire, byte by byte

def test_cr_line_ends_a_crlf_split_across_chunks_and_multi_line_data():
    text = "<think>lines end three ways</think>"
    first, second = event(text[:10]), event(text[10:])
    # Lone CRs end the lines of one event, CRLFs those of the next; the finish event's JSON spans
    # two data lines (joined by a newline, which JSON reads as space), and the HTTP chunk ends
    # between the CR and the LF of its first line: that CRLF is one line end, not two.
    head = 'data: {"choices": [{"index": 0, "delta": {},\r'
    finish = head + '\ndata:  "finish_reason": "stop"}]}\r\n\r\n'
    raw = (first.replace("\n", "\r") + second.replace("\n", "\r\n") + finish + "data: [DONE]\n\n").encode()
    cut = len(first) + len(second) + 2 + len(head)  # (second grew by two CRs)

    def script(handler, request):
        send_sse(handler, raw, piece=cut)

    with RawServer(script) as server:
        assert "".join(ChatStreamClient(server.base_url, "EMPTY", timeout=5).stream(body())) == text


def test_stream_headers_and_a_server_that_compresses_anyway():
    import gzip

    raw = (event(SEARCH) + event(None, "stop") + "data: [DONE]\n\n").encode()
    seen = []

    def script(handler, request):
        seen.append({k.lower(): v for k, v in handler.headers.items()})
        data = gzip.compress(raw)
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    with RawServer(script) as server:
        assert "".join(ChatStreamClient(server.base_url, "sk-test", timeout=5).stream(body())) == SEARCH
    headers = seen[0]
    assert headers["accept"] == "text/event-stream" and headers["accept-encoding"] == "identity"
    assert headers["authorization"] == "Bearer sk-test" and headers["content-type"] == "application/json"


def test_a_stream_request_answered_with_a_web_page():
    with RawServer(_html_page(200, b"<html>login required</html>")) as server:
        with pytest.raises(ChatEndpointError, match=r"answered a stream request with 'text/html', not an event "):
            list(ChatStreamClient(server.base_url, "EMPTY", timeout=5).stream(body()))


def test_a_lone_surrogate_escape_in_the_text_is_passed_on():
    # Valid JSON that the fast parser refuses; the standard one reads it, as before.
    raw = ('data: {"choices": [{"index": 0, "delta": {"content": "a\\ud800b"}, "finish_reason": null}]}\n\n'
           + event(None, "stop") + "data: [DONE]\n\n").encode()

    def script(handler, request):
        send_sse(handler, raw)

    with RawServer(script) as server:
        assert "".join(ChatStreamClient(server.base_url, "EMPTY", timeout=5).stream(body())) == "a\ud800b"
