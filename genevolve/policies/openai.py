"""Any OpenAI-compatible chat endpoint as a policy: vLLM serving the released checkpoint, or an API.

Turns are streamed through a lean httpx + SSE client (``chat_stream.py``; the openai SDK's
per-chunk objects were most of a round's cost). Generation stops at ``</tool_call>`` /
``</answer>``; servers drop the stop string, so it is put back. Images named by a message's
``"images"`` ids are sent as downscaled ``image_url`` data URIs. Every failure (connection
refused, 5xx/429 after the client's retries, a stream that dies) becomes a one-line
``PolicyError``, which ends the trajectory with a reason.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import os
import threading
from typing import Iterator, Sequence
from urllib.parse import urlparse

from genevolve.policies.base import PolicyBase
from genevolve.policies.base import PolicyError
from genevolve.policies.chat_stream import ChatStreamClient
from genevolve.protocol import TURN_END_STRINGS

DEFAULT_BASE_URL = "https://api.openai.com/v1"


# Our defaults; the protocol profile may bring its own (official: 0.6, top_p 0.9, 4096, no stop strings).
DEFAULT_SAMPLING = {"temperature": 0.7, "top_p": None, "max_tokens": 2048, "stop_at_turn_end": True}


class OpenAIPolicy(PolicyBase):
    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 temperature: float | None = None, max_tokens: int | None = None, timeout: float = 120.0,
                 stream: bool = True, max_retries: int = 2, send_images: bool = True,
                 max_image_side: int = 1024, top_p: float | None = None, **extra_body):
        if not model:
            raise PolicyError("openai policy needs a model name: openai:<model>@<base_url>")
        self.model = model
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if not _is_local(self.base_url):
                raise PolicyError(f"OPENAI_API_KEY is not set for {self.base_url}: export it, or point the "
                                  "policy at a local server (openai:<model>@http://127.0.0.1:8000/v1)")
            key = "EMPTY"  # vLLM and friends accept any key
        self.api_key = key
        given = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
        self.explicit_sampling = {k for k, v in given.items() if v is not None}
        for key, default in DEFAULT_SAMPLING.items():
            setattr(self, key, given.get(key) if given.get(key) is not None else default)
        self.timeout = timeout
        self.use_stream = stream
        self.max_retries = max_retries
        self.send_images = send_images
        self.max_image_side = max_image_side
        self.extra_body = extra_body or None
        self.name = f"openai:{model}@{self.base_url}"
        self._client = None
        self._client_lock = threading.Lock()
        self._data_uris: dict[str, str] = {}  # path -> data URI; every round resends the same images

    @property
    def client(self) -> ChatStreamClient:
        with self._client_lock:
            if self._client is None:
                self._client = ChatStreamClient(self.base_url, self.api_key, timeout=self.timeout,
                                                max_retries=self.max_retries)
            return self._client

    # ------------------------------------------------------------------ policy interface

    def stream(self, messages: list[dict], images: Sequence = ()) -> Iterator[str]:
        payload = self.to_openai_messages(messages, images)
        try:
            if self.use_stream:
                yield from self._stream(payload)
            else:
                yield from self._complete(payload)
        except PolicyError:
            raise
        except Exception as exc:  # noqa: BLE001 - any client/transport failure is one line for the caller
            raise PolicyError(_reason(exc, self.base_url)) from exc

    def sample(self, messages: list[dict], n: int) -> list[str]:
        return ["".join(self.stream(messages)) for _ in range(n)]

    def use_profile_sampling(self, defaults: dict) -> None:
        """The protocol profile's sampling, except what the spec set (``?temperature=`` …)."""
        for key, value in defaults.items():
            if key not in self.explicit_sampling:
                setattr(self, key, value)

    # ------------------------------------------------------------------ requests

    def _body(self, payload: list[dict]) -> dict:
        body = {"model": self.model, "messages": payload, "temperature": self.temperature,
                "max_tokens": self.max_tokens}
        if self.top_p is not None:
            body["top_p"] = self.top_p
        if self.stop_at_turn_end:  # the official profile sends none: the model ends its own turn
            body["stop"] = list(TURN_END_STRINGS)
        if self.extra_body:
            body.update(self.extra_body)
        return body

    def _stream(self, payload: list[dict]) -> Iterator[str]:
        text: list[str] = []
        body = self._body(payload)
        # Where we ask the server to stop, the client stops reading too (a server may ignore ``stop``).
        for delta in self.client.stream(body, end_at=body.get("stop") or ()):
            text.append(delta)
            yield delta
        tail = closing_tag("".join(text)) if self.stop_at_turn_end else ""
        if tail:
            yield tail

    def _complete(self, payload: list[dict]) -> Iterator[str]:
        body = self._body(payload)
        text = self.client.complete(body, end_at=body.get("stop") or ())
        yield text + (closing_tag(text) if self.stop_at_turn_end else "")

    # ------------------------------------------------------------------ messages and images

    def to_openai_messages(self, messages: list[dict], images: Sequence = ()) -> list[dict]:
        by_id = {getattr(i, "img_id", None): i for i in images}
        out = []
        for msg in messages:
            ids = [i for i in (msg.get("images") or []) if i in by_id] if self.send_images else []
            if not ids:
                out.append({"role": msg["role"], "content": msg["content"]})
                continue
            parts: list[dict] = [{"type": "text", "text": msg["content"]}]
            for img_id in ids:
                parts.append({"type": "image_url", "image_url": {"url": self._data_uri(by_id[img_id].path)}})
            out.append({"role": msg["role"], "content": parts})
        return out

    def _data_uri(self, path: str) -> str:
        uri = self._data_uris.get(path)
        if uri is None:
            uri = image_data_uri(path, self.max_image_side)
            self._data_uris[path] = uri
        return uri


def closing_tag(text: str) -> str:
    """The closing tag a stop sequence removed, or "" when the turn is already closed."""
    for tag in TURN_END_STRINGS:
        opening = tag.replace("/", "")
        if text.rfind(opening) > text.rfind(tag):
            return tag
    return ""


def image_data_uri(path: str, max_side: int = 1024) -> str:
    """A JPEG (or PNG, when there is transparency) data URI, downscaled to ``max_side``."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if max(im.size) > max_side:
            im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        has_alpha = im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info)
        buf = io.BytesIO()
        if has_alpha:
            im.save(buf, format="PNG")
            mime = "image/png"
        else:
            im.convert("RGB").save(buf, format="JPEG", quality=90)
            mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"


def _is_local(base_url: str) -> bool:
    host = (urlparse(base_url).hostname or "").lower()
    if host in ("localhost", "") or host.endswith(".local"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified or ip.is_link_local


def _reason(exc: Exception, base_url: str) -> str:
    """One line a person can act on, for what the client did not word itself."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"the request to {base_url} failed: {type(exc).__name__}: {first}".rstrip(": ")
