"""Settings: backend specs, paths and limits, from defaults, a YAML/JSON file and the environment.

Every default works offline with no key and no GPU. Environment variables ``GENEVOLVE_<FIELD>``
override a field (e.g. ``GENEVOLVE_POLICY=openai:genevolve@http://127.0.0.1:8000/v1``).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path

from genevolve.specs import env_flag, is_true

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSETS = REPO_ROOT / "assets"
EXAMPLES = REPO_ROOT / "examples"


def genevolve_home() -> Path:
    home = Path(os.environ.get("GENEVOLVE_HOME", Path.home() / ".genevolve")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


@dataclass
class Settings:
    policy: str = "planner"
    renderer: str = "layout"
    judge: str = "local"
    offline: bool | None = None  # None: decide by whether the web can be reached
    corpus_dir: str = str(EXAMPLES / "corpus")
    library_dir: str = str(ASSETS / "library")
    store_path: str = ""  # "" -> $GENEVOLVE_HOME/genevolve.db
    cache_path: str = ""  # "" -> $GENEVOLVE_HOME/tool_cache.db
    cache_mode: str = "readwrite"  # readwrite | replay (cache only, fail on miss) | off
    runs_dir: str = ""  # "" -> $GENEVOLVE_HOME/runs
    max_rounds: int = 11
    max_tool_calls: int = 10
    max_references: int = 2
    system_prompt_path: str | None = None
    protocol: str | None = None  # genevolve | nano | official[:<path>] (genevolve.profiles); None: the policy's, else ours
    # KScore judge: a rubric file (or official:/path/to/GenEvolve for the official evaluator's),
    # the reply budget and the long side of the images sent; None: ours (1024 tokens, 1280 px).
    judge_rubric: str | None = None
    judge_max_tokens: int | None = None
    judge_image_side: int | None = None
    search_top_k: int = 5
    image_top_k: int = 4
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        home = None
        if not self.store_path:
            home = home or genevolve_home()
            self.store_path = str(home / "genevolve.db")
        if not self.cache_path:
            home = home or genevolve_home()
            self.cache_path = str(home / "tool_cache.db")
        if not self.runs_dir:
            home = home or genevolve_home()
            self.runs_dir = str(home / "runs")

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> "Settings":
        data: dict = {}
        if path:
            text = Path(path).read_text(encoding="utf-8")
            if str(path).endswith((".yaml", ".yml")):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        names = {f.name: f for f in fields(cls)}
        for name, f in names.items():
            env = os.environ.get(f"GENEVOLVE_{name.upper()}")
            if env is None or name == "extra":
                continue
            data[name] = _coerce(env, f.type)
        data.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(data) - set(names)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def resolved_offline(self) -> bool:
        return (not web_reachable()) if self.offline is None else bool(self.offline)


def _coerce(value: str, type_hint) -> object:
    t = str(type_hint)
    if "bool" in t:
        return is_true(value)
    if "int" in t and "str" not in t:
        return int(value)
    return value


@lru_cache(maxsize=1)
def web_reachable(host: str = "duckduckgo.com") -> bool:
    """Whether web backends are worth trying: can the resolver name a search host?

    Only DNS is asked (no connection is opened). Web backends still fall back to the local
    corpus on any failure, so a wrong guess costs one timeout, never a broken run.
    """
    if env_flag("GENEVOLVE_OFFLINE"):
        return False
    old = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(1.5)
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(old)
