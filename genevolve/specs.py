"""Backend spec strings and their typed options; the one reading of flag words.

A spec names a backend the same way in the CLI, the studio and configs:
``kind[:target][@base_url][?key=value&…]`` (``hf:/models/x?4bit=1``, ``openai:gpt-4o@https://h/v1``,
``diffusers:org/model?steps=4``). ``parse_spec`` splits the string; each backend declares the
options it accepts as a small dataclass (fields made with ``param``), and ``read_options`` fills
it from the spec's string values, so a wrong key or value fails with a message that names it and
what is accepted, instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def is_true(value: Any) -> bool:
    """A flag word that means yes (``1``, ``true``, ``yes``, ``on``; any case); anything else is no."""
    return str(value).strip().lower() in TRUE_WORDS


def read_flag(value: Any) -> bool | None:
    """True or False for a flag word (``1/0``, ``true/false``, ``yes/no``, ``on/off``), else None."""
    word = str(value).strip().lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to a yes word."""
    return is_true(os.environ.get(name, ""))


# ---------------------------------------------------------------- splitting a spec

@dataclass
class Spec:
    """A backend spec string split into parts: ``kind:target?key=value&...``.

    ``openai:gpt-4o@https://host/v1`` -> kind "openai", target "gpt-4o", base_url "https://host/v1".
    ``params`` holds the raw string values; a backend reads them with ``read_options``.
    """

    kind: str
    target: str = ""
    base_url: str | None = None
    params: dict = field(default_factory=dict)
    raw: str = ""


# Kinds whose target may be followed by ``@<base_url>`` (an OpenAI-compatible endpoint).
REMOTE_KINDS = ("openai", "kscore", "wise", "sufficiency")
# Query keys that configure the backend itself, never the server: taken out of a base URL.
SPEC_URL_KEYS = ("temperature", "top_p", "max_tokens", "stream", "rubric", "image_side")


def parse_spec(spec: str) -> Spec:
    from urllib.parse import parse_qsl

    raw = spec.strip()
    if not raw:
        raise ValueError("empty backend spec")
    kind, _, rest = raw.partition(":")
    if "?" in kind:  # "nano?4bit=1": parameters without a target
        kind, _, query = kind.partition("?")
        rest = "?" + query + rest
    params: dict = {}
    # Query parameters belong to the spec only for local kinds; a base URL keeps its own.
    if "?" in rest and "@" not in rest:
        rest, _, query = rest.partition("?")
        params = dict(parse_qsl(query))
    base_url = None
    if kind in REMOTE_KINDS and "@" in rest:
        rest, _, base_url = rest.partition("@")
        base_url, own = split_spec_params(base_url)
        params.update(own)
    return Spec(kind=kind.strip().lower(), target=rest.strip(), base_url=base_url, params=params, raw=raw)


def spec_kind(spec: str | None, default: str = "") -> str:
    """Just the kind of a spec (``hf:/m?4bit=1`` -> ``hf``); ``default`` for an empty one."""
    return parse_spec(spec).kind if spec and spec.strip() else default


def split_spec_params(url: str, keys: tuple[str, ...] | None = SPEC_URL_KEYS) -> tuple[str, dict]:
    """``http://h/v1?temperature=0.6&api-version=x`` -> (``http://h/v1?api-version=x``, {"temperature": "0.6"}).

    ``keys=None`` takes every query parameter (an endpoint whose URL carries no query of its own)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.query:
        return url, {}
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in pairs if keys is None or k in keys}
    kept = [(k, v) for k, v in pairs if k not in own]
    return urlunsplit(parts._replace(query=urlencode(kept))), own


# ---------------------------------------------------------------- typed options

def param(default: Any = None, help: str = "", *, key: str | None = None):  # noqa: A002 - as in training.config
    """An option field; ``key`` is its name in the spec when that is no Python name (``4bit``)."""
    return field(default=default, metadata={"help": help, "key": key})


def option_keys(cls) -> list[str]:
    """The keys a spec may give for the options dataclass ``cls``."""
    return [f.metadata.get("key") or f.name for f in dataclasses.fields(cls)]


_KIND_WORDS = {bool: "a flag (1/0, true/false, yes/no)", int: "a whole number", float: "a number"}


def read_options(cls: type[T], params: dict, *, backend: str, error: type[Exception] = ValueError) -> T:
    """The options dataclass ``cls`` filled from a spec's string ``params``.

    Values are converted to each field's type (str, int, float, bool, or None-able ones); an
    unknown key or a value of the wrong kind raises ``error`` naming it and the accepted keys.
    The dataclass's own ``__post_init__`` checks ranges."""
    hints = typing.get_type_hints(cls)
    by_key = {f.metadata.get("key") or f.name: f for f in dataclasses.fields(cls)}
    accepted = ", ".join(by_key) or "none"
    unknown = sorted(set(params) - set(by_key))
    if unknown:
        raise error(f"unknown {backend} option(s) {', '.join(unknown)}; accepted: {accepted}")
    kwargs = {}
    for key, raw in params.items():
        f = by_key[key]
        kind = _base_type(hints[f.name])
        try:
            kwargs[f.name] = _convert(raw, kind)
        except ValueError:
            raise error(f"{backend} option {key}={raw!r} is not {_KIND_WORDS[kind]}") from None
    return cls(**kwargs)


def _base_type(hint) -> type:
    """``int | None`` -> int."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _convert(raw: Any, kind: type) -> Any:
    if kind is bool:
        flag = read_flag(raw)
        if flag is None:
            raise ValueError(raw)
        return flag
    if kind in (int, float):
        return kind(raw)
    return raw


@dataclass
class NoOptions:
    """For backends that take no options (a spec that gives one is an error)."""


@dataclass
class SamplingOptions:
    """Sampling any generating policy takes: ``?temperature=0.6&top_p=0.9&max_tokens=4096``."""

    temperature: float | None = param(None, "Sampling temperature (>= 0).")
    top_p: float | None = param(None, "Nucleus sampling (0 < top_p <= 1).")
    max_tokens: int | None = param(None, "Tokens per turn (>= 1).")

    def __post_init__(self):
        t, p, m = self.temperature, self.top_p, self.max_tokens
        if (t is not None and t < 0) or (p is not None and not 0 < p <= 1) or (m is not None and m < 1):
            raise ValueError(f"sampling out of range (temperature >= 0, 0 < top_p <= 1, max_tokens >= 1): "
                             f"temperature={t}, top_p={p}, max_tokens={m}")

    def given(self) -> dict:
        """The sampling values the spec set (what it left out comes from the profile or backend)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(SamplingOptions)
                if getattr(self, f.name) is not None}
