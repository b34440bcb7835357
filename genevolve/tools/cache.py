"""A SQLite cache in front of every tool: one backend call per distinct question.

Six GRPO rollouts of one prompt, or a bench re-run, ask the same questions again; the cache
answers them from disk. The key is (tool, backend, normalised arguments, tool context):
query strings are stripped, whitespace-collapsed and lowercased, keys sorted, and a tool may
fold in what else its answer depends on (image_search folds in the user's images).

Images are stored by content hash in ``<db stem>_files/`` beside the database, and the result
text is stored with each ``IMG_###`` replaced by a slot, because ids belong to one trajectory:
a cached image_search result registers its files in the *current* trajectory's registry and
the text is re-filled with the ids that registry hands out.

Modes: ``readwrite`` (serve hits, record misses), ``replay`` (serve hits only; a miss is an
error result that says the call was not recorded, so a recorded run re-plays byte for byte
with no network), ``off`` (no cache). A result that came from a fallback backend is recorded
as degraded: replay serves it (the run really saw it), readwrite asks the backend again.

Single flight: concurrent identical calls (the rollouts of one GRPO group ask the same question at
the same moment) wait for one backend call and share its result instead of all missing together.
Only a stored success is shared; when the call fails, each waiter asks the backend itself, so one
transient failure is never handed to every rollout as an answer. Flights are per ``ToolCache``
object, i.e. per process (``build_tools`` keeps one per database).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from genevolve.profiles import profile_of
from genevolve.tools.base import Tool, ToolArgumentError, ToolContext, ToolResult
from genevolve.trajectory import file_sha256

MODES = ("readwrite", "replay", "off")
_IMG_ID_RE = re.compile(r"\bIMG_\d{3,}\b")
_SLOT_RE = re.compile(r"\{\{IMG:(\d+)\}\}")
_PATH_SLOT_RE = re.compile(r"\{\{PATH:(\d+)\}\}")


def normalise_args(value: Any) -> Any:
    """Arguments in a canonical form: strings stripped, spaces collapsed, lowercased; dict keys sorted."""
    if isinstance(value, str):
        return " ".join(value.split()).lower()
    if isinstance(value, dict):
        return {str(k): normalise_args(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [normalise_args(v) for v in value]
    return value


def cache_key_text(tool: str, backend: str, args: dict, context: dict | None = None) -> str:
    return json.dumps({"tool": tool, "backend": backend, "args": normalise_args(args),
                       "context": context or {}}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _set_wal(db: sqlite3.Connection, attempts: int = 60) -> None:
    """WAL mode, waiting out another connection that is switching it at the same moment: the switch
    takes an exclusive lock that SQLite's busy timeout does not wait for, so two workers opening
    one new cache together saw "database is locked"."""
    for attempt in range(attempts):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


class ToolCache:
    """Thread-safe SQLite store of tool results (text with id slots + image files by hash)."""

    def __init__(self, path: str | Path, mode: str = "readwrite"):
        if mode not in MODES:
            raise ValueError(f"cache_mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.files_dir = self.path.parent / f"{self.path.stem}_files"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        _set_wal(self._db)
        # A cache may lose its newest entries on power loss (they are asked again); an fsync per
        # stored result cost more than the loop's whole round (see docs/bench/runtime.md).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS tool_cache (key TEXT PRIMARY KEY, tool TEXT, backend TEXT, "
            "text TEXT, images TEXT, answered_by TEXT, degraded INTEGER, created_at REAL)")
        self._db.commit()
        self.hits = self.misses = self.shared = 0
        self._flights: dict[str, _Flight] = {}
        self._flights_lock = threading.Lock()

    # ---------------------------------------------------------------- storage

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT text, images, answered_by, degraded FROM tool_cache WHERE key=?",
                                   (key,)).fetchone()
        if row is None:
            return None
        return {"text": row[0], "images": json.loads(row[1] or "[]"), "answered_by": row[2],
                "degraded": bool(row[3])}

    def put(self, key: str, tool: str, backend: str, result: ToolResult, degraded: bool) -> None:
        slots: dict[str, int] = {}
        images = []
        for ref in result.images:
            if ref.img_id in slots:
                continue
            src = Path(ref.path)
            digest = ref.sha256 or file_sha256(src)
            blob = self.files_dir / f"{digest}{src.suffix.lower() or '.img'}"
            if not blob.exists():
                self.files_dir.mkdir(parents=True, exist_ok=True)
                tmp = blob.with_name(blob.name + ".part")
                shutil.copyfile(src, tmp)
                tmp.replace(blob)
            slots[ref.img_id] = len(images)
            images.append({"file": blob.name, "source": ref.source, "title": ref.title,
                           "caption": ref.caption, "url": ref.url})
        text = _IMG_ID_RE.sub(lambda m: "{{IMG:%d}}" % slots[m.group(0)] if m.group(0) in slots else m.group(0),
                              result.text)
        # A reply that names its files (the official profile's local_path lines) gets this
        # trajectory's paths back, not the recording run's.
        for ref in result.images:
            if ref.img_id in slots and ref.path:
                text = text.replace(str(ref.path), "{{PATH:%d}}" % slots[ref.img_id])
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO tool_cache VALUES (?,?,?,?,?,?,?,?)",
                             (key, tool, backend, text, json.dumps(images), result.backend, int(degraded),
                              time.time()))
            self._db.commit()

    def materialise(self, entry: dict, ctx: ToolContext) -> ToolResult:
        """Turn a stored entry into a result for this trajectory: register its images, fill the ids."""
        refs = []
        by_location = profile_of(ctx).numbers_images_by_location
        for img in entry["images"]:
            ref = ctx.registry.register(self.files_dir / img["file"], source=img["source"], title=img["title"],
                                        caption=img["caption"], url=img["url"], by_location=by_location)
            refs.append(ref)
        text = _SLOT_RE.sub(lambda m: refs[int(m.group(1))].img_id, entry["text"])
        text = _PATH_SLOT_RE.sub(lambda m: str(refs[int(m.group(1))].path), text)
        return ToolResult(text=text, images=refs, backend=entry["answered_by"],
                          meta={"cache": "hit", "degraded": entry["degraded"]})

    def stats(self) -> dict:
        with self._lock:
            n = self._db.execute("SELECT COUNT(*) FROM tool_cache").fetchone()[0]
        with self._flights_lock:
            waiting = sum(f.waiting for f in self._flights.values())
        return {"entries": n, "hits": self.hits, "misses": self.misses, "shared": self.shared,
                "in_flight": len(self._flights), "waiting": waiting, "mode": self.mode}

    # ---------------------------------------------------------------- single flight

    def begin_flight(self, key: str) -> tuple["_Flight", bool]:
        """The flight for ``key`` and whether the caller leads it (makes the backend call)."""
        with self._flights_lock:
            flight = self._flights.get(key)
            if flight is not None:
                flight.waiting += 1
                return flight, False
            flight = self._flights[key] = _Flight()
            return flight, True

    def end_flight(self, key: str, flight: "_Flight", stored: bool) -> None:
        """Release the waiters; ``stored`` says the result is in the cache for them to share."""
        flight.stored = stored
        with self._flights_lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.done.set()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedTool(Tool):
    """Wraps a tool so each distinct call reaches its backend once."""

    def __init__(self, tool: Tool, cache: ToolCache):
        self.tool = tool
        self.cache = cache
        self.name = tool.name
        self.description = getattr(tool, "description", "")
        self.backend_name = getattr(tool, "backend_name", tool.name)

    def __getattr__(self, item):  # expose the wrapped tool's helpers (backends, stats...)
        tool = self.__dict__.get("tool")
        if tool is None:
            raise AttributeError(item)
        return getattr(tool, item)

    def __call__(self, args: dict, ctx: ToolContext) -> ToolResult:
        profile = profile_of(ctx)
        # A profile that reads arguments strictly makes two spellings two questions.
        canonical = None if profile.reads_arguments_strictly else getattr(self.tool, "canonical_args", None)
        try:
            key_args = canonical(args) if canonical else args
        except ToolArgumentError:
            return self.tool(args, ctx)  # let the tool word the error; errors are never cached
        context_fn = getattr(self.tool, "cache_context", None)
        context = {**(context_fn(ctx) if context_fn else {}), **profile.cache_context(self.name, args)} or None
        key = cache_key_text(self.name, self.backend_name, key_args, context)
        result = self._from_cache(key, ctx, accept_degraded=self.cache.mode == "replay")
        if result is not None:
            self.cache.hits += 1
            return result
        if self.cache.mode == "replay":
            self.cache.misses += 1
            return ToolResult(
                text=(f"The {self.name} call with arguments {json.dumps(args, ensure_ascii=False)} was not "
                      "recorded in the tool cache, and the cache is in replay mode, so no backend was asked. "
                      "Continue with what you have."),
                backend="cache-replay", error="not recorded (replay mode)", meta={"cache": "miss"})
        flight, leader = self.cache.begin_flight(key)
        if not leader:
            flight.done.wait()
            if flight.stored:
                # The leader's result is this very moment's answer, so it is shared even when a
                # fallback backend gave it (later calls ask again, see the module docstring).
                result = self._from_cache(key, ctx, accept_degraded=True)
                if result is not None:
                    self.cache.shared += 1
                    result.meta["cache"] = "shared"
                    return result
            return self._ask_backend(key, args, ctx)[0]  # the leader failed: not shared, ask ourselves
        stored = False
        try:
            # Another leader may have stored the answer between our lookup and our flight.
            result = self._from_cache(key, ctx, accept_degraded=False)
            if result is not None:
                self.cache.hits += 1
                stored = True
                return result
            result, stored = self._ask_backend(key, args, ctx)
            return result
        finally:
            self.cache.end_flight(key, flight, stored)

    def _from_cache(self, key: str, ctx: ToolContext, accept_degraded: bool) -> ToolResult | None:
        entry = self.cache.get(key)
        if entry is None or (entry["degraded"] and not accept_degraded):
            return None
        try:
            return self.cache.materialise(entry, ctx)
        except OSError:  # a stored image file went missing: treat the entry as absent
            return None

    def _ask_backend(self, key: str, args: dict, ctx: ToolContext) -> tuple[ToolResult, bool]:
        """The backend's result, stored when it is a success; and whether it was stored."""
        self.cache.misses += 1
        result = self.tool(args, ctx)
        stored = False
        if result.error is None:
            degraded = bool(result.meta.get("fallback"))
            self.cache.put(key, self.name, self.backend_name, result, degraded)
            stored = True
        result.meta.setdefault("cache", "miss")
        return result, stored


class _Flight:
    """One backend call in progress that identical concurrent calls wait for."""

    __slots__ = ("done", "stored", "waiting")

    def __init__(self):
        self.done = threading.Event()
        self.stored = False
        self.waiting = 0  # callers that joined this flight instead of calling the backend


def wrap_with_cache(tools: dict[str, Tool], cache: ToolCache | None) -> dict[str, Tool]:
    if cache is None or cache.mode == "off":
        return dict(tools)
    return {name: CachedTool(tool, cache) for name, tool in tools.items()}
