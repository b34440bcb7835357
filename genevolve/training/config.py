"""Training configs: the fields both trainers share, with help text, and loading them from YAML.

Like TRL's ``*Config`` classes, each field carries its help text in ``metadata["help"]``
(``describe(cls)`` prints them); ``SFTConfig`` extends ``TrainingConfig``, and ``GRPOConfig``
subclasses ``trl.GRPOConfig`` (TRL's fields used as TRL names them, ours added).
Nested configs (``model``, ``agent``, ``reward``, ``sdl``) are typed dataclasses, filled from
nested YAML mappings; an unknown key anywhere is an error that names it and the known ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory=None):  # noqa: A002 - TRL's name
    """A dataclass field with help text (``factory`` for mutable defaults)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    name: str = option("tiny:gemma3", "tiny:gemma3 | gemma3-270m | a folder or hub id from_pretrained can load.")
    dtype: str = option("auto", "auto (bf16 on a GPU that has it, else fp32) | bfloat16 | float32 | float16.")
    lora: dict | None = option(None, "LoRA adapter: {r, alpha, dropout, target_modules}; None trains all weights.")
    gradient_checkpointing: bool = option(False, "Recompute activations in the backward pass (less memory).")
    freeze_vision: bool = option(True, "Image-text models: keep the vision tower as released.")
    init_adapter: str | None = option(None, "Start LoRA from this trained adapter folder (GRPO after SFT) "
                                      "instead of a fresh one.")
    freeze_embeddings: bool = option(False, "Full fine-tuning without the (tied) embedding matrix, which is 63% "
                                     "of Gemma 3 270M.")
    attn_implementation: str | None = option("eager", "eager | sdpa | flash_attention_2 (None: the model's default).")
    max_length: int = option(2048, "Tokens per conversation (longer ones are cut; with images, refused).")
    extra: dict = option(factory=dict, help="Passed to from_pretrained.")

    @classmethod
    def from_string(cls, name: str) -> "ModelConfig":
        return cls(name=name)


@dataclass
class TrainingConfig:
    """What every trainer takes: the model, the run folder, the schedule, checkpoints and resume."""

    model: ModelConfig = option(factory=ModelConfig, help="The policy to train (name, dtype, LoRA, max_length).")
    run_dir: str = option("runs/train", "Run folder: config.yaml, status.json, metrics.jsonl, checkpoints/.")
    seed: int = option(0, "Seeds Python, NumPy and torch (and the data order).")
    max_steps: int = option(100, "Optimizer steps to run in total (a resumed run stops here too).")
    lr: float = option(1e-5, "Peak learning rate (AdamW, betas 0.9/0.99).")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    warmup_steps: int = option(0, "Linear warm-up steps, then cosine decay to 10% of the peak rate.")
    max_grad_norm: float = option(1.0, "Gradient-norm clip.")
    save_every: int = option(50, "Checkpoint every this many steps (and always at the last step or a stop).")
    keep_checkpoints: int = option(3, "How many step checkpoints to keep (latest and best are never pruned).")
    resume: bool = option(True, "Continue from checkpoints/latest when the run folder has one.")
    stop_after: int | None = option(None, "Stop (checkpointed, resumable) after this many steps in this process.")


def describe(cls) -> str:
    """One line per field: ``name (default): help`` (nested configs indented)."""
    lines = []

    def walk(c, indent: str) -> None:
        for f in dataclasses.fields(c):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                default = repr(f.default)
            elif f.default_factory is dataclasses.MISSING:
                default = "required"
            else:
                value = f.default_factory()
                default = "…" if dataclasses.is_dataclass(value) else repr(value)
            lines.append(f"{indent}{f.name} ({default}): {f.metadata.get('help', '')}".rstrip(": "))
            sub = _nested_types(c).get(f.name)
            if sub is not None:
                walk(sub, indent + "  ")

    walk(cls, "")
    return "\n".join(lines)


def _nested_types(cls) -> dict[str, type]:
    """Fields whose default is a config dataclass: these take nested mappings."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            if dataclasses.is_dataclass(value):
                out[f.name] = type(value)
    return out


def config_from_dict(cls: type[T], data: dict) -> T:
    """A (nested) config dataclass from a dict; unknown keys are an error that names them."""
    data = dict(data)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        import difflib

        hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, names, n=1)) else k
                 for k in sorted(unknown)]
        known = sorted(getattr(cls, "__annotations__", {})) if len(names) > 60 else sorted(names)
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(hints)}; known: {', '.join(known)}"
                         + (f" and every field of {cls.__mro__[1].__module__.split('.')[0]}.{cls.__mro__[1].__name__}"
                            if len(names) > 60 else ""))
    nested = _nested_types(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        sub = nested.get(key)
        if sub is not None and isinstance(value, str) and hasattr(sub, "from_string"):
            value = sub.from_string(value)
        if sub is not None and isinstance(value, dict):
            value = config_from_dict(sub, value)
        kwargs[key] = value
    return cls(**kwargs)


def config_from_file(cls: type[T], path: str | Path, **overrides) -> T:
    """Load a YAML config; ``overrides`` (None values ignored) replace top-level keys, and a dict
    override for a nested section is merged into that section."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"training config not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not UTF-8 text; save the training config as UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{p} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a training config is a YAML mapping of field: value")
    # A run folder's own config.yaml (written at its start) names its trainer and the checkpoint
    # folder it derived from run_dir; both are dropped so the file can start another run.
    trainer = data.pop("trainer", None)
    expected = cls.__name__.removesuffix("Config").lower()
    if trainer is not None and trainer != expected:
        raise ValueError(f"{p} is the config of a {trainer} run; pass it to `train {trainer}`, not `train {expected}`")
    if trainer is not None and isinstance(data.get("run_dir"), str):
        old_run = Path(data["run_dir"])
        if data.get("output_dir") == str(old_run / "checkpoints"):
            del data["output_dir"]
        # A guide store the run kept in its own folder moves with run_dir: another run sharing it
        # would retrieve the first run's guides.
        sdl = data.get("sdl")
        store = sdl.get("store_path") if isinstance(sdl, dict) else None
        if overrides.get("run_dir") and isinstance(store, str) and Path(store).parent == old_run:
            data["sdl"] = {**sdl, "store_path": str(Path(overrides["run_dir"]) / Path(store).name)}
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    for key in _PATH_KEYS:
        if isinstance(data.get(key), str):
            data[key] = _find_path(data[key], p.parent)
    agent = data.get("agent")
    if isinstance(agent, dict) and isinstance(agent.get("system_prompt_path"), str):
        data["agent"] = {**agent, "system_prompt_path": _find_path(agent["system_prompt_path"], p.parent)}
    return config_from_dict(cls, data)


_PATH_KEYS = ("train_data", "eval_data", "prompts", "system_prompt_path", "settings")


def _find_path(value: str, config_dir: Path) -> str:
    """A relative data path from a config: as given when it exists from the current folder, else
    next to the config, else under the repository (so shipped configs run from any folder, and
    from a copy the studio writes into a job folder)."""
    from genevolve.config import REPO_ROOT

    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return value
    for base in (config_dir, REPO_ROOT):
        if (base / path).exists():
            return str(base / path)
    return value


def config_to_dict(cfg) -> dict:
    """Plain data for config.yaml (a TRL config converts its enums in ``to_dict``)."""
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dataclasses.asdict(cfg)
