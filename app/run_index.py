"""Bring bench and data-build trajectories into the studio's store, so the Inspector audits them too.

``genevolve bench run`` and ``genevolve data build`` write their trajectories to their output
folders (``cases/<id>/trajectory.json``; ``stages/trajectories.jsonl``), not to the store. The
Inspector imports those folders — the studio's own bench jobs, ``$GENEVOLVE_HOME/{bench,data}``,
``./runs`` and any folder an annotator names — tagging each row with its ``source`` (bench or
data) and its folder. Importing is idempotent (rows are keyed by trajectory id) and a folder is
read again only when its result file changed.
"""

from __future__ import annotations

import json
import threading
import zlib
from pathlib import Path

from app import storage

_seen: dict[str, float] = {}  # folder -> mtime of its result file when last imported
_lock = threading.Lock()


def kind_of(folder: Path) -> str | None:
    """``bench`` (a bench run dir), ``data`` (a data-build dir) or None."""
    if (folder / "cases").is_dir() and ((folder / "rollout.jsonl").is_file() or (folder / "run.json").is_file()):
        return "bench"
    if (folder / "stages" / "trajectories.jsonl").is_file():
        return "data"
    return None


def _marker(folder: Path, kind: str) -> Path:
    return folder / "rollout.jsonl" if kind == "bench" else folder / "stages" / "trajectories.jsonl"


def known_folders() -> list[Path]:
    """Result folders the studio can find by itself."""
    home = storage.studio_home().parent
    roots = [home / "bench", home / "data", Path("runs"), Path("bench_runs")]
    found: list[Path] = []
    for root in roots:
        if not root.is_dir():
            continue
        for marker in list(root.glob("**/rollout.jsonl"))[:200] + list(root.glob("**/stages/trajectories.jsonl"))[:200]:
            folder = marker.parent if marker.name == "rollout.jsonl" else marker.parent.parent
            if kind_of(folder):
                found.append(folder.resolve())
    return sorted(set(found))


def import_folder(folder: str | Path, *, force: bool = False) -> tuple[str, int]:
    """Import one bench or data-build folder; returns (its kind, trajectories imported).

    Raises ValueError with what to give instead when the folder is neither."""
    folder = Path(str(folder).strip()).expanduser()
    if not folder.is_dir():
        raise ValueError(f"not a folder: {folder}")
    kind = kind_of(folder)
    if kind is None:
        raise ValueError(f"{folder} is neither a bench run (cases/ + rollout.jsonl, from `genevolve bench run`) "
                         "nor a data build (stages/trajectories.jsonl, from `genevolve data build`)")
    marker = _marker(folder, kind)
    mtime = marker.stat().st_mtime if marker.exists() else 0.0
    key = str(folder.resolve())
    with _lock:
        if not force and _seen.get(key) == mtime:
            return kind, 0
        n = _import_bench(folder) if kind == "bench" else _import_data(folder)
        _seen[key] = mtime
    return kind, n


def import_known() -> int:
    """Import every known folder that changed since the last look; returns trajectories imported."""
    total = 0
    for folder in known_folders():
        try:
            total += import_folder(folder)[1]
        except (OSError, ValueError):
            continue  # a folder being written right now is picked up on the next refresh
    return total


def _save(traj, source: str, folder: Path, image: Path | None, verification: dict | None = None) -> None:
    traj.meta["source"] = source
    traj.meta["folder"] = str(folder)
    st = storage.store()
    st.save_trajectory(traj)
    if image is not None and image.is_file():
        st.attach_render(traj.id, str(image), None, verification)


def _import_bench(folder: Path) -> int:
    from genevolve.trajectory import Trajectory

    n = 0
    for path in sorted(folder.glob("cases/*/trajectory.json")):
        try:
            traj = Trajectory.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError):
            continue  # a half-written case: the runner rewrites it atomically, the next refresh reads it
        _save(traj, "bench", folder, path.parent / "image.png")
        n += 1
    return n


def _import_data(folder: Path) -> int:
    from genevolve.durable import latest_by_id, read_jsonl
    from genevolve.trajectory import Trajectory

    gt_rows = {}
    gt_path = folder / "stages" / "gt.jsonl"
    if gt_path.is_file():
        gt_rows = latest_by_id(read_jsonl(gt_path))
    # Recipe ids repeat between builds (r0001…), so the folder is part of the row's id.
    prefix = f"data-{zlib.crc32(str(folder.resolve()).encode()) & 0xFFFF:04x}-"
    n = 0
    for rid, row in latest_by_id(read_jsonl(folder / "stages" / "trajectories.jsonl")).items():
        try:
            traj = Trajectory.from_dict(row["trajectory"])
        except (ValueError, TypeError, KeyError):
            continue
        traj.id = prefix + str(rid)
        gt = (gt_rows.get(rid) or {}).get("gt_image")
        _save(traj, "data", folder, folder / gt if gt else None)
        n += 1
    return n
