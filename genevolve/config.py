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

from genevolve.errors import EnvironmentFault, UserError
from genevolve.specs import env_flag, is_true

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSETS = REPO_ROOT / "assets"
EXAMPLES = REPO_ROOT / "examples"


def genevolve_home() -> Path:
    home = Path(os.environ.get("GENEVOLVE_HOME", Path.home() / ".genevolve")).expanduser()
    if home.exists() and not home.is_dir():
        raise UserError(f"GENEVOLVE_HOME={home} is a file, not a folder: point GENEVOLVE_HOME at a folder")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentFault(f"cannot create the GenEvolve home {home} ({exc.strerror}): "
                               f"set GENEVOLVE_HOME to a folder you can write") from None
    return home


def read_settings_file(path: str | Path) -> dict:
    """The mapping a YAML or JSON settings file holds; a ``UserError`` naming the file otherwise."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"config file {path} does not exist: check the path")
    if not path.is_file():
        raise UserError(f"config {path} is not a file: give a YAML or JSON settings file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text: save it as UTF-8 YAML or JSON") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path} ({exc.strerror})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except RecursionError:
        raise UserError(f"config file {path} is nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - yaml's and json's errors both say where
        raise UserError(f"config file {path} is not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'}: "
                        f"{' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} holds a {type(data).__name__}; it must be a mapping of settings "
                        f"such as 'policy: planner'")
    return data


# Numeric settings and their smallest sensible value.
_AT_LEAST = {"max_rounds": 1, "max_tool_calls": 0, "max_references": 0, "search_top_k": 1, "image_top_k": 1}
_CACHE_MODES = ("readwrite", "replay", "off")


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
        self._check_values()
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

    def _check_values(self) -> None:
        """Wrong types and impossible limits fail here, before any work starts."""
        for f in fields(self):
            value = getattr(self, f.name)
            hint = str(f.type)
            if value is None and "None" not in hint:
                raise UserError(f"setting {f.name} may not be empty")
            if f.name in _AT_LEAST:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise UserError(f"setting {f.name}={value!r} must be a whole number")
                if value < _AT_LEAST[f.name]:
                    raise UserError(f"setting {f.name}={value} must be at least {_AT_LEAST[f.name]}")
            elif hint.startswith("str") and value is not None and not isinstance(value, str):
                raise UserError(f"setting {f.name}={value!r} must be a string")
            elif f.name == "extra" and not isinstance(value, dict):
                raise UserError(f"setting extra must be a mapping, not {type(value).__name__}")
        if self.cache_mode not in _CACHE_MODES:
            raise UserError(f"setting cache_mode={self.cache_mode!r}: use one of {', '.join(_CACHE_MODES)}")

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> "Settings":
        data: dict = read_settings_file(path) if path else {}
        names = {f.name: f for f in fields(cls)}
        for name, f in names.items():
            env = os.environ.get(f"GENEVOLVE_{name.upper()}")
            if env is None or name == "extra":
                continue
            try:
                data[name] = _coerce(env, f.type)
            except ValueError:
                raise UserError(f"GENEVOLVE_{name.upper()}={env!r} is not a valid {name}") from None
        data.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(data) - set(names)
        if unknown:
            where = f" in {path}" if path else ""
            raise UserError(f"unknown setting(s){where}: {', '.join(sorted(map(str, unknown)))}; "
                            f"known: {', '.join(names)}")
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
