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


class RunFolderBusy(RuntimeError):
    """Another process is training in the run folder."""


class RunFiles:
    """The files of one training run (layout documented in ``genevolve.training``)."""

    def __init__(self, run_dir: str | Path, create: bool = True):
        self.dir = Path(run_dir).expanduser()
        if create:  # with several processes only rank 0 writes (and creates) the folder
            self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.status_path = self.dir / "status.json"
        self.checkpoints = self.dir / "checkpoints"
        self.world_size: int | None = None  # processes of the run; status.json records it once set
        self._held = None

    def hold(self) -> None:
        """Claim the folder for this process's trainer: a second one would interleave its steps,
        metrics and checkpoints with ours. The OS frees the claim when the process dies; within one
        process it is re-entrant (a trainer built again on the same folder)."""
        from filelock import FileLock, Timeout

        lock = FileLock(self.dir / ".trainer.lock", is_singleton=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RunFolderBusy(f"another process is training in {self.dir}: wait for it, or stop it (it saves "
                                "its step first) and run the same command again") from None
        self._held = lock

    def release(self) -> None:
        if self._held is not None:
            self._held.release()
            self._held = None

    def log(self, record: dict) -> dict:
        rec = _clean({"time": time.time(), **record})
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return rec

    def truncate_metrics(self, after_step: int) -> None:
        """On resume, drop lines logged after the checkpoint so the file reads as one run."""
        self.truncate_jsonl(self.metrics_path.name, after_step)

    def truncate_jsonl(self, name: str, after_step: int) -> int:
        """Keep the rows of ``name`` with ``step <= after_step``; a torn last line (a kill mid-write)
        is cut first, as the bench runner does. Returns the rows dropped."""
        from genevolve.durable import repair_jsonl, write_atomic

        path = self.dir / name
        if not path.is_file():
            return 0
        repair_jsonl(path)
        keep, dropped = [], 0
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {n} is not JSON ({exc.msg}); fix or delete that line, "
                                 f"then resume") from None
            if isinstance(row, dict) and row.get("step", 0) <= after_step:
                keep.append(line)
            else:
                dropped += 1
        write_atomic(path, "".join(line + "\n" for line in keep))
        return dropped

    def start_clean(self, extra: tuple | list = ()) -> None:
        """A run with no checkpoint to resume from starts over: metrics (and ``extra`` files) from an
        earlier attempt that died before its first checkpoint would otherwise be logged twice;
        checkpoint folders it left half-written are removed."""
        import shutil

        for name in (self.metrics_path.name, *extra):
            (self.dir / name).unlink(missing_ok=True)
        if self.checkpoints.is_dir():
            shutil.rmtree(self.checkpoints)

    def mark_latest(self, name: str) -> None:
        """``checkpoints/latest`` names the newest complete checkpoint (written last, atomically)."""
        from genevolve.durable import write_atomic

        write_atomic(self.checkpoints / "latest", name)

    def mark_best(self, name: str) -> None:
        """``checkpoints/best`` names the checkpoint with the lowest held-out loss (SFT)."""
        from genevolve.durable import write_atomic

        write_atomic(self.checkpoints / "best", name)

    def latest_trl_checkpoint(self) -> Path | None:
        """The checkpoint ``latest`` names when it is a complete TRL ``checkpoint-N`` folder."""
        marker = self.checkpoints / "latest"
        if not marker.is_file():
            return None
        path = self.checkpoints / marker.read_text().strip()
        return path if (path / "trainer_state.json").is_file() else None

    def status(self, state: str, **fields: Any) -> None:
        data = {"state": state, "pid": os.getpid(), "updated_at": time.time(), **fields}
        if self.world_size is not None:
            data["world_size"] = self.world_size
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
    """Every complete row of metrics.jsonl (a torn last line, being written or cut by a kill, is skipped)."""
    return read_rows(Path(run_dir) / "metrics.jsonl")


def read_rows(path: str | Path) -> list[dict]:
    """Every complete row of a run folder's JSONL file (metrics.jsonl, rollouts.jsonl); a torn last
    line is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


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
