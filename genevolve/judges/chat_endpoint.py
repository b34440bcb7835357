"""The chat client remote judges and the SDL guide writer share: an OpenAI-compatible
chat-completions endpoint with a process-wide rate limit, retries with back-off, and a reader
for the JSON object in a model's reply.

Built from the ``<kind>:<model>@<base_url>[?timeout=..&retries=..&rpm=..]`` part of a spec by
``endpoint_from_spec``. The ``openai`` package is imported when an endpoint is built, the
client created on its first request.
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass

from genevolve.judges.base import JudgeError
from genevolve.judges.rate_limit import RateLimiter, limiter_for
from genevolve.protocol import loads_lenient
from genevolve.specs import param, read_options, split_spec_params

# ---------------------------------------------------------------- reading replies

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def parse_json_reply(text: str) -> dict:
    """The JSON object in a judge reply: fences, prose around it, trailing commas and a
    reasoning model's ``<think>`` block are tolerated. Raises ValueError with a reason."""
    if not text or not text.strip():
        raise ValueError("empty reply")
    cleaned = _THINK_RE.sub("", text).strip()
    # A fenced block inside prose: take the fence body.
    fence = re.search(r"```[a-zA-Z]*\s*(\{.*?\})\s*```", cleaned, re.DOTALL)
    if fence:
        cleaned = fence.group(1)
    data = loads_lenient(cleaned)
    if not isinstance(data, dict):
        raise ValueError("the reply is JSON but not an object")
    return data



def _retry_after(exc) -> float | None:
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None) or {}
    if not hasattr(headers, "get"):
        return None
    try:
        if headers.get("retry-after-ms") is not None:
            return float(headers.get("retry-after-ms")) / 1000.0
        value = headers.get("retry-after")
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own back-off


class ChatEndpoint:
    """An OpenAI-compatible chat-completions endpoint with a shared RPM limit and back-off.

    Retried: 429 (honouring Retry-After, and pausing every thread on this endpoint), 5xx,
    timeouts and connection errors, with exponential back-off plus jitter. Not retried: other
    4xx (a wrong model name or key will not fix itself). Thread-safe: one ``openai`` client
    (an httpx pool) is shared by all threads.
    """

    def __init__(self, model: str, base_url: str | None, *, api_key: str | None = None,
                 timeout_s: float = 120.0, max_retries: int = 5, backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, rpm: int | None = None, limiter: RateLimiter | None = None,
                 temperature: float = 0.0, max_tokens: int = 1024):
        import os

        if not model:
            raise ValueError("a judge endpoint needs a model name: <kind>:<model>@<base_url>")
        self.model = model
        self.base_url = base_url
        gemini = "generativelanguage.googleapis.com" in (base_url or "")
        self.api_key = (api_key or os.environ.get("GENEVOLVE_JUDGE_API_KEY")
                        or (os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY") if gemini else None)
                        or os.environ.get("OPENAI_API_KEY") or "EMPTY")  # EMPTY: a local vLLM needs none
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.limiter = limiter or limiter_for(base_url or "openai-default", rpm)
        import openai  # noqa: F401 - ~2 s the first time; paid when the judge is built, not mid-run

        self._client = None
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "rate_limited": 0, "timeouts": 0}
        self._stats_lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def client(self):
        with self._lock:
            if self._client is None:
                from openai import OpenAI

                import httpx

                # Retries are ours (shared limiter, Retry-After across threads), not the SDK's.
                # Redirects are not followed: a 307 would re-send the prompt and image wherever it
                # points (an internal address); a declared body over the cap is refused unread.
                http = httpx.Client(timeout=httpx.Timeout(self.timeout_s), follow_redirects=False,
                                    event_hooks={"response": [_refuse_large_body]})
                self._client = OpenAI(base_url=self.base_url, api_key=self.api_key,
                                      timeout=self.timeout_s, max_retries=0, http_client=http)
            return self._client

    def _create(self, messages: list[dict], **kw):
        """One request, its whole answer within ``timeout_s`` of wall-clock time.

        The SDK's timeout bounds each socket read, which a server dripping a byte at a time never
        trips; here the call runs in a worker, and at the deadline the client is closed under it
        (and replaced), so the caller gets a timeout on time."""
        import openai

        client = self.client()
        outcome: dict = {}

        def call() -> None:
            try:
                outcome["resp"] = client.chat.completions.create(
                    model=self.model, messages=messages, temperature=kw.get("temperature", self.temperature),
                    max_tokens=kw.get("max_tokens", self.max_tokens))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                outcome["error"] = exc

        worker = threading.Thread(target=call, name="genevolve-judge-call", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if worker.is_alive():
            with self._lock:
                if self._client is client:
                    self._client = None  # the next attempt gets a fresh client
            threading.Thread(target=client.close, name="genevolve-judge-close", daemon=True).start()
            raise openai.APITimeoutError(request=_dummy_request(self.base_url))
        if "error" in outcome:
            raise outcome["error"]
        return outcome["resp"]

    def complete(self, messages: list[dict], **kw) -> str:
        import openai

        attempt = 0
        while True:
            self.limiter.acquire()
            self._count("requests")
            try:
                resp = self._create(messages, **kw)
                if not resp.choices:
                    raise JudgeError("the endpoint returned no choices")
                return resp.choices[0].message.content or ""
            except openai.RateLimitError as exc:
                self._count("rate_limited")
                delay = _retry_after(exc)
                delay = self._delay(attempt) if delay is None else delay
                self.limiter.penalize(delay)
                error = f"rate limited (429) {attempt + 1} times"
            except openai.APITimeoutError:
                self._count("timeouts")
                delay, error = self._delay(attempt), f"timed out after {self.timeout_s:g}s"
            except openai.APIConnectionError as exc:
                if isinstance(exc.__cause__, _BodyTooLarge):
                    raise JudgeError(str(exc.__cause__)) from None
                delay, error = self._delay(attempt), f"cannot reach {self.base_url}: {exc}"
            except openai.InternalServerError as exc:
                delay, error = self._delay(attempt), f"server error {exc.status_code}"
            except _BodyTooLarge as exc:
                raise JudgeError(str(exc)) from None
            except openai.APIStatusError as exc:
                if 300 <= exc.status_code < 400:
                    raise JudgeError(f"the judge endpoint answered a redirect ({exc.status_code}) to "
                                     f"{exc.response.headers.get('location', '?')}; redirects are not followed "
                                     f"(the request carries the prompt and image): use the final URL") from None
                raise JudgeError(f"the judge endpoint refused the request ({exc.status_code}): "
                                 f"{str(exc)[:300]}") from exc
            if attempt >= self.max_retries:
                raise JudgeError(f"{error}; gave up after {attempt + 1} attempts")
            attempt += 1
            self._count("retries")
            time.sleep(delay)

    def _delay(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.backoff_s * (2 ** attempt)) * (0.75 + 0.5 * random.random())


# The largest judge reply read: a verdict is a few kB of JSON; more is a broken or hostile server.
MAX_REPLY_BYTES = 8 * 1024 * 1024


class _BodyTooLarge(Exception):
    pass


def _refuse_large_body(response) -> None:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REPLY_BYTES:
        response.close()
        raise _BodyTooLarge(f"the judge endpoint answered {int(declared):,} bytes, over the "
                            f"{MAX_REPLY_BYTES:,}-byte cap")


def _dummy_request(base_url: str | None):
    import httpx

    return httpx.Request("POST", (base_url or "http://localhost").rstrip("/") + "/chat/completions")


@dataclass
class EndpointOptions:
    """What a remote judge or guide-writer spec takes after its base URL."""

    timeout: float | None = param(None, "Seconds per request.")
    retries: int | None = param(None, "Retries after a 429, a 5xx, a timeout or a lost connection.")
    rpm: int | None = param(None, "Requests per minute for this endpoint, shared by every thread.")
    max_tokens: int | None = param(None, "Tokens per reply.")
    temperature: float | None = param(None, "Sampling temperature of the replies.")

    def __post_init__(self):
        # An impossible limit fails when the spec is read, not after a whole run of "judge failed".
        for name, low, strict in (("timeout", 0, True), ("retries", 0, False), ("rpm", 1, False),
                                  ("max_tokens", 1, False), ("temperature", 0, False)):
            value = getattr(self, name)
            if value is not None and (value <= low if strict else value < low):
                raise ValueError(f"{name}={value} is out of range: {name} must be "
                                 f"{'more than' if strict else 'at least'} {low}")


_ENDPOINT_KWARGS = {"timeout": "timeout_s", "retries": "max_retries", "rpm": "rpm", "max_tokens": "max_tokens",
                    "temperature": "temperature"}


def _split_base_url(spec) -> tuple[str | None, dict]:
    """The base URL without its query, and the query: an endpoint URL carries none of its own, so
    what ``parse_spec`` left on it is the spec's options too."""
    if not spec.base_url:
        return spec.base_url, {}
    return split_spec_params(spec.base_url, keys=None)


def endpoint_options(spec, options: type = EndpointOptions):
    """The spec's options read into ``options`` (``EndpointOptions`` or a judge's subclass of it)."""
    return read_options(options, {**(spec.params or {}), **_split_base_url(spec)[1]}, backend=spec.kind)


def endpoint_from_spec(spec, opts: EndpointOptions | None = None, **kw) -> ChatEndpoint:
    """A ChatEndpoint from a parsed ``kind:<model>@<base_url>[?timeout=..&retries=..&rpm=..]`` spec;
    ``opts`` when the caller has read them already; ``kw`` (ChatEndpoint arguments) win over the spec."""
    opts = endpoint_options(spec) if opts is None else opts
    base = _split_base_url(spec)[0]
    if base and not base.lower().startswith(("http://", "https://")):
        raise ValueError(f"{spec.kind} endpoint must be an http:// or https:// URL, got {base!r}")
    for name, arg in _ENDPOINT_KWARGS.items():
        if getattr(opts, name) is not None:
            kw.setdefault(arg, getattr(opts, name))
    return ChatEndpoint(spec.target, _split_base_url(spec)[0], **kw)
