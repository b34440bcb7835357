"""Run-directory files the studio reads: metrics.jsonl, status.json, config copy.

Each write is small and appended (metrics) or replaced atomically (status), so a reader that
polls the folder never sees a half-written file.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 6)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):  # a 0-d tensor or numpy scalar
        return _clean(value.item())
    return value


class RunFiles:
    """The files of one training run (layout documented in ``genevolve.training``)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.status_path = self.dir / "status.json"
        self.checkpoints = self.dir / "checkpoints"

    def log(self, record: dict) -> dict:
        rec = _clean({"time": time.time(), **record})
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return rec

    def truncate_metrics(self, after_step: int) -> None:
        """On resume, drop lines logged after the checkpoint so the file reads as one run."""
        if not self.metrics_path.is_file():
            return
        keep = [line for line in self.metrics_path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= after_step]
        tmp = self.metrics_path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
        tmp.replace(self.metrics_path)

    def status(self, state: str, **fields: Any) -> None:
        data = {"state": state, "pid": os.getpid(), "updated_at": time.time(), **fields}
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_clean(data), indent=2), encoding="utf-8")
        tmp.replace(self.status_path)

    def save_config(self, config: dict) -> None:
        import yaml

        (self.dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def append(self, name: str, record: dict) -> None:
        with open(self.dir / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(_clean(record), ensure_ascii=False) + "\n")


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_status(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / "status.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    m = sum(values) / len(values)
    return m, (sum((v - m) ** 2 for v in values) / len(values)) ** 0.5


def progress(total: int, initial: int, desc: str):
    """A command-line progress bar (stderr; silent when not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, disable=None)
