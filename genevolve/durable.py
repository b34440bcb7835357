"""Crash-safe files: atomic writes and append-only JSONL that survive a kill -9 at any moment.

Used by ``genevolve.batch`` (the bench run, the data build, the ablation), whose stages resume from
these files.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path


def escape_surrogates(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udcXX`` escapes.

    A command-line argument with invalid UTF-8 arrives as a str with lone surrogates
    (Python's surrogateescape), which neither SQLite nor a UTF-8 file can store. Inside JSON
    text the escape is JSON's own, so ``json.loads`` gives back exactly the same string.
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_text(obj, **kwargs) -> str:
    """``json.dumps`` for files and the store: readable UTF-8, lossless for any Python str."""
    return escape_surrogates(json.dumps(obj, ensure_ascii=False, **kwargs))


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``path`` whole or not at all: a full disk or a kill leaves the old file (or none),
    never a half-written one, and no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename in (None, str(tmp)):
            exc.filename = str(path)  # the user knows the file they asked for, not our temporary name
        raise


def save_image_atomic(image, path: Path, compress_level: int = 1) -> None:
    import io

    buf = io.BytesIO()
    # Lossless either way; level 1 encodes ~10x faster than the default and costs ~20% more bytes.
    image.save(buf, format="PNG", compress_level=compress_level)
    write_atomic(path, buf.getvalue())


def repair_jsonl(path: Path) -> int:
    """Cut a JSONL file back to its last complete line; returns the bytes removed."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return len(data) - keep


def read_jsonl(path: Path) -> list[dict]:
    """Every complete, parseable line (a torn last line is ignored, never fatal)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "id" in row:
            out.append(row)
    return out


def latest_by_id(rows: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for row in rows:
        out[str(row["id"])] = row
    return out


class JsonlAppender:
    """Appends whole lines under a lock; each line is flushed and fsynced before returning."""

    def __init__(self, path: Path):
        self.path = path
        repair_jsonl(path)
        self._lock = threading.Lock()
        self._f = open(path, "a", encoding="utf-8")

    def append(self, row: dict) -> str:
        """Append ``row``; returns the line written (what a reader of the file will get back)."""
        # json_text: a lone surrogate (undecodable bytes in a bench row) is kept as an escape,
        # where plain json.dumps output would fail to encode as UTF-8.
        line = json_text(row, default=str) + "\n"
        with self._lock:
            try:
                self._f.write(line)
                self._f.flush()
                os.fsync(self._f.fileno())
            except OSError as exc:
                # A torn last line is cut off when the file is next opened (repair_jsonl).
                exc.filename = exc.filename or str(self.path)
                raise
        return line

    def close(self) -> None:
        with self._lock:
            self._f.close()
