"""Staged, resumable batch runs: the engine under the bench run, ``eval programs``, the data build and
the nano ablation.

Items are dicts with a stable ``id``; a stage turns one item into one row. Its ledger
``<dir>/<stage>.jsonl`` gets the row (appended and fsynced) only after the stage's own files are in
place (``durable.write_atomic``), so a line means "done for this item". A kill -9 leaves at most a torn
last line, cut off when the ledger is next opened, and a rerun skips every item with a line: a killed
run ends with every item exactly once per stage. Stages run one after another over all items (a later
one reads earlier rows through ``rows``); within a stage, workers take items in any order, and a row
depends only on its item, so the output does not depend on who finished first.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from genevolve.durable import JsonlAppender, latest_by_id, read_jsonl
from genevolve.errors import is_disk_fault


@dataclass
class Stage:
    name: str  # also names the ledger file
    run: Callable[[dict], dict]  # one item -> its row (the runner adds "id", "elapsed_s", "attempts")
    workers: int = 1
    # None: an exception stops the run (nothing recorded for that item, so a rerun does it again);
    # n: retried n times with exponential backoff, then recorded as {"status": "failed", "error"}.
    retries: int | None = None
    backoff_s: float = 1.0
    applies: Callable[[dict], bool] | None = None  # the items this stage is for (default: all)
    head: Callable[[dict], dict] | None = None  # leading fields of every row of an item, failures included


def claim_folder(out: Path, record: Path, identity: dict, *, resume: bool, taken: bool, what: str,
                 error: type[Exception]) -> None:
    """Refuse to mix two runs in one folder: a ``taken`` one (it holds results) needs ``resume``, and a
    resumed one must have the ``identity`` its ``record`` file names."""
    if taken and not resume:
        raise error(f"{out} already holds a {what}; pass --resume to continue it or choose another --out folder")
    previous = json.loads(record.read_text(encoding="utf-8")).get("identity") if record.exists() else identity
    if resume and previous != identity:
        raise error(f"{out} holds a {what} with other options ({previous}); resume it with the same options "
                    "or choose another --out folder")


class PerThread:
    """A value built on first use in each thread: one agent, tool set or renderer per worker."""

    def __init__(self, build: Callable[[], object]):
        self._build = build
        self._local = threading.local()

    def __call__(self):
        try:
            return self._local.value
        except AttributeError:
            value = self._local.value = self._build()
            return value


class Shared:
    """A thread-safe value built once, on first use, for every thread."""

    def __init__(self, build: Callable[[], object]):
        self._build = build
        self._lock = threading.Lock()
        self._value = None

    def __call__(self):
        with self._lock:
            if self._value is None:
                self._value = self._build()
            return self._value


class LedgerBusy(RuntimeError):
    """Another process is filling the same stage ledger."""


class BatchRun:
    """The stages' ledgers in one folder, and the loop that fills them."""

    def __init__(self, ledger_dir: str | Path, *, progress: bool = False, log: Callable[[str], None] | None = None):
        self.dir = Path(ledger_dir)
        self.progress = progress
        self.log = log or (lambda msg: None)
        self._rows: dict[str, dict[str, dict]] = {}
        self._lock = threading.Lock()

    def ledger(self, stage: str) -> Path:
        return self.dir / f"{stage}.jsonl"

    def rows(self, stage: str, *, fresh: bool = False) -> dict[str, dict]:
        """The finished rows of ``stage`` by item id (the last line wins; a torn line is ignored),
        read once and then kept up to date by this run; ``fresh``: read the ledger again."""
        with self._lock:
            if fresh or stage not in self._rows:
                self._rows[stage] = latest_by_id(read_jsonl(self.ledger(stage)))
            return self._rows[stage]

    def ordered(self, stage: str, items: Iterable[dict]) -> list[dict]:
        """The finished rows of ``stage`` in the order of ``items``."""
        done = self.rows(stage)
        return [done[str(item["id"])] for item in items if str(item["id"]) in done]

    def run(self, stages: list[Stage], items: list[dict]) -> dict[str, dict]:
        return {stage.name: self.run_stage(stage, items) for stage in stages}

    def run_stage(self, stage: Stage, items: list[dict]) -> dict:
        """Run ``stage`` on every item it applies to that has no row yet; returns the counts."""
        from filelock import FileLock, Timeout

        self.dir.mkdir(parents=True, exist_ok=True)
        # Two processes on one ledger would both run every item left and append it twice: the second
        # is refused. The OS lets go of the lock when its holder dies, so a killed run never blocks.
        lock = FileLock(self.dir / f".{stage.name}.jsonl.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise LedgerBusy(f"another process is running the {stage.name} stage in {self.dir}: wait for it, or "
                             "stop it and run again (the ledger resumes where it stopped)") from None
        try:
            return self._run_stage(stage, items)
        finally:
            lock.release()

    def _run_stage(self, stage: Stage, items: list[dict]) -> dict:
        appender = JsonlAppender(self.ledger(stage.name))  # cuts a torn last line before reading
        done = self.rows(stage.name, fresh=True)
        wanted = [it for it in items if stage.applies is None or stage.applies(it)]
        todo = [it for it in wanted if str(it["id"]) not in done]
        counts = {"done_before": len(wanted) - len(todo), "ran": 0, "failed": 0}

        def work(item: dict) -> dict:
            # Kept as it reads back from the ledger, so a later stage sees what a resumed run would.
            row = json.loads(appender.append(self._attempt(stage, item)))
            with self._lock:
                done[str(item["id"])] = row
            return row

        with contextlib.ExitStack() as stack:
            stack.callback(appender.close)
            advance = stack.enter_context(self._bar(stage.name, len(wanted), counts["done_before"]))
            finished = map(work, todo)  # one worker: in this thread, so Ctrl-C stops at once
            if stage.workers > 1:
                pool = stack.enter_context(cf.ThreadPoolExecutor(stage.workers, thread_name_prefix=stage.name))
                finished = (fut.result() for fut in cf.as_completed([pool.submit(work, it) for it in todo]))
            for row in finished:
                counts["ran"] += 1
                counts["failed"] += row.get("status") == "failed"
                advance()
        self.log(f"{stage.name}: {counts['ran']} run, {counts['done_before']} already done, "
                 f"{counts['failed']} failed")
        return counts

    @staticmethod
    def _attempt(stage: Stage, item: dict) -> dict:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                result = stage.run(item)
                break
            except Exception as exc:
                # A full disk is the machine, not the item: stop, so a rerun does the item again.
                if stage.retries is None or is_disk_fault(exc):
                    raise
                if attempt >= stage.retries:
                    result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                    break
                attempt += 1
                time.sleep(stage.backoff_s * (2 ** (attempt - 1)))
        row = {"id": item["id"], **(stage.head(item) if stage.head else {}), **result}
        row.setdefault("elapsed_s", round(time.perf_counter() - started, 4))
        if stage.retries is not None:
            row["attempts"] = attempt + 1
        return row

    def _bar(self, label: str, total: int, completed: int):
        @contextlib.contextmanager
        def bar():
            if not self.progress or total == 0:
                yield lambda: None
                return
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            with Progress(TextColumn(f"[bold]{label:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TextColumn("eta"), TimeRemainingColumn(), console=Console(stderr=True)) as prog:
                task = prog.add_task(label, total=total, completed=completed)
                yield lambda: prog.advance(task)

        return bar()
