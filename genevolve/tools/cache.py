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

from genevolve.profiles import DEFAULT_PROFILE, profile_of
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
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS tool_cache (key TEXT PRIMARY KEY, tool TEXT, backend TEXT, "
            "text TEXT, images TEXT, answered_by TEXT, degraded INTEGER, created_at REAL)")
        self._db.commit()
        self.hits = self.misses = 0

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
        for img in entry["images"]:
            ref = ctx.registry.register(self.files_dir / img["file"], source=img["source"], title=img["title"],
                                        caption=img["caption"], url=img["url"])
            refs.append(ref)
        text = _SLOT_RE.sub(lambda m: refs[int(m.group(1))].img_id, entry["text"])
        text = _PATH_SLOT_RE.sub(lambda m: str(refs[int(m.group(1))].path), text)
        return ToolResult(text=text, images=refs, backend=entry["answered_by"],
                          meta={"cache": "hit", "degraded": entry["degraded"]})

    def stats(self) -> dict:
        with self._lock:
            n = self._db.execute("SELECT COUNT(*) FROM tool_cache").fetchone()[0]
        return {"entries": n, "hits": self.hits, "misses": self.misses, "mode": self.mode}

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
        # The official profile reads arguments strictly, so two spellings are two questions.
        canonical = None if profile_of(ctx).official else getattr(self.tool, "canonical_args", None)
        try:
            key_args = canonical(args) if canonical else args
        except ToolArgumentError:
            return self.tool(args, ctx)  # let the tool word the error; errors are never cached
        context_fn = getattr(self.tool, "cache_context", None)
        context = context_fn(ctx) if context_fn else None
        profile = profile_of(ctx)
        if profile.name != DEFAULT_PROFILE:  # replies are worded per profile; the default keeps its old keys
            context = {**(context or {}), "profile": profile.name}
        if profile.official:  # its replies echo the arguments verbatim: key on them exactly
            context["exact_args"] = args
        key = cache_key_text(self.name, self.backend_name, key_args, context)
        entry = self.cache.get(key)
        if entry is not None and (self.cache.mode == "replay" or not entry["degraded"]):
            try:
                result = self.cache.materialise(entry, ctx)
            except OSError:  # a stored image file went missing: treat the entry as absent
                result = None
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
        self.cache.misses += 1
        result = self.tool(args, ctx)
        if result.error is None:
            degraded = bool(result.meta.get("fallback"))
            self.cache.put(key, self.name, self.backend_name, result, degraded)
        result.meta.setdefault("cache", "miss")
        return result


def wrap_with_cache(tools: dict[str, Tool], cache: ToolCache | None) -> dict[str, Tool]:
    if cache is None or cache.mode == "off":
        return dict(tools)
    return {name: CachedTool(tool, cache) for name, tool in tools.items()}
