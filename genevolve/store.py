"""SQLite store: runs (trajectories), audits, Decision Guides and background jobs.

One file, WAL mode, one connection per thread (and process), each operation one transaction,
so that threads (the studio's workers, the bench runner) and processes (a training job) can
share it safely.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from genevolve.durable import escape_surrogates, json_text
from genevolve.errors import EnvironmentFault
from genevolve.trajectory import Trajectory

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    session TEXT,
    request TEXT NOT NULL,
    policy TEXT,
    renderer TEXT,
    termination TEXT,
    has_errors INTEGER NOT NULL DEFAULT 0,
    n_rounds INTEGER,
    n_tool_calls INTEGER,
    elapsed_s REAL,
    program TEXT,
    trajectory TEXT NOT NULL,
    image_path TEXT,
    render TEXT,
    verification TEXT,
    verified_ok INTEGER,
    source TEXT                 -- studio | cli | bench | data: where the trajectory came from
);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at);
CREATE INDEX IF NOT EXISTS runs_session ON runs(session);
CREATE TABLE IF NOT EXISTS audits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trajectory_id TEXT NOT NULL,
    step INTEGER,               -- NULL: the whole trajectory
    verdict TEXT NOT NULL CHECK (verdict IN ('accept', 'reject', 'needs_fix')),
    comment TEXT,
    annotator TEXT,
    created_at REAL NOT NULL,
    fix TEXT                    -- needs_fix on a step: the annotator's replacement for that turn
);
CREATE INDEX IF NOT EXISTS audits_traj ON audits(trajectory_id);
CREATE TABLE IF NOT EXISTS guides (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    trigger TEXT NOT NULL,
    summary TEXT NOT NULL,
    guidance TEXT NOT NULL,      -- JSON: {kind: [bullets]}
    source_prompt TEXT,
    reward_gap REAL,
    embedding BLOB,              -- float32 vector of trigger + summary
    times_retrieved INTEGER NOT NULL DEFAULT 0,
    meta TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    config TEXT,
    status TEXT NOT NULL,        -- queued | running | stopped | failed | done
    pid INTEGER,
    run_dir TEXT,
    message TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


def _read_only(path: Path) -> bool:
    """Whether the store's folder cannot be written: a read-only mount, or no write permission."""
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return True
        return not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK))
    except OSError:
        return False


def _nearly_full(path: Path) -> bool:
    """Whether the filesystem of ``path`` has (almost) no room left: SQLite reports a full disk as
    "disk I/O error" when the journal cannot grow."""
    import shutil

    try:
        return shutil.disk_usage(path.parent).free < 1024 * 1024
    except OSError:
        return False


class StoreError(EnvironmentFault):
    """The store file cannot be used: a folder, a damaged or read-only file; the message says what to do."""


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self._local = threading.local()
        self._crossed_fork: list[sqlite3.Connection] = []
        self._check_path()
        try:
            self._check_whole()
            with self.connect() as db:
                db.executescript(SCHEMA)
                _add_missing_columns(db)
            # An idle connection that has read the database keeps the WAL open, so closing each
            # short-lived connection is not a checkpoint + fsync (~25 ms on these disks, vs <1 ms).
            self._keeper = sqlite3.connect(self.path, check_same_thread=False)
            self._keeper.execute("SELECT 1 FROM runs LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._damaged(exc)) from exc

    def _check_path(self) -> None:
        """A store path that is a folder, lies below a file or cannot be created: say so by name."""
        if self.path.is_dir():
            raise StoreError(f"the store path {self.path} is a folder; point store_path (or GENEVOLVE_HOME) "
                             f"at a file, or move that folder aside")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StoreError(f"the store {self.path} lies below a file; choose another store_path or "
                             f"GENEVOLVE_HOME") from None

    def _check_whole(self) -> None:
        """A file shorter than the pages its header counts was cut (a full disk, a bad copy): say so at
        open, not at the first query that reaches a missing page. Cheap: the header only."""
        if not self.path.is_file() or Path(f"{self.path}-wal").exists():
            return  # new, or its last pages may still be in the write-ahead log
        size = self.path.stat().st_size
        if size == 0:
            return
        with open(self.path, "rb") as f:
            header = f.read(100)
        if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
            raise sqlite3.DatabaseError("file is not a database")
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        if pages and size < pages * page_size:
            raise sqlite3.DatabaseError(f"database disk image is malformed: {size} of {pages * page_size} bytes")

    def _damaged(self, exc: Exception) -> str:
        if _read_only(self.path):
            return (f"the store {self.path} is on a read-only filesystem or folder ({exc}); "
                    f"set GENEVOLVE_HOME to a folder you can write")
        if isinstance(exc, sqlite3.OperationalError) and "locked" not in str(exc) and "readonly" in str(exc):
            return f"the store {self.path} is read-only ({exc}); make it writable or choose another GENEVOLVE_HOME"
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return f"the store {self.path} is locked by another process ({exc}); wait for it or stop it"
        if isinstance(exc, sqlite3.OperationalError) and ("disk is full" in str(exc) or _nearly_full(self.path)):
            return f"no space left for the store {self.path}: free some space (or set GENEVOLVE_HOME elsewhere) and rerun"
        if isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc):
            return f"cannot open the store {self.path} ({exc}); check the folder exists and is writable"
        if "malformed" not in str(exc) and "not a database" not in str(exc):
            return (f"cannot use the store {self.path} ({exc}): the disk may be out of space or failing; "
                    f"free some space or set GENEVOLVE_HOME elsewhere, then rerun")
        return (f"the store {self.path} is damaged ({exc}). Keep it aside and start a new one: "
                f"mv '{self.path}' '{self.path}.broken' (then recover what is readable with: "
                f"sqlite3 '{self.path}.broken' .recover | sqlite3 '{self.path}.recovered')")

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection; the block is one transaction (rolled back if it raises)."""
        db = self._thread_connection()
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise

    def _thread_connection(self) -> sqlite3.Connection:
        # Kept per thread: opening a connection and setting its pragmas cost a third of saving a
        # trajectory (~0.15 of ~0.5 ms), and a kept connection reuses its prepared statements.
        held = getattr(self._local, "db", None)
        if held is not None:
            pid, db = held
            if pid == os.getpid():
                return db
            # Opened before a fork: the child must not use (or close) it; it opens its own.
            self._crossed_fork.append(db)
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        self._local.db = (os.getpid(), db)
        return db

    # ------------------------------------------------------------------ runs

    def save_trajectory(self, traj: Trajectory) -> None:
        has_errors = int(any(s.error for s in traj.steps) or traj.termination not in ("answer", "forced_answer"))
        row = {
            "id": traj.id, "created_at": traj.created_at, "session": traj.meta.get("session"),
            "request": escape_surrogates(traj.request), "policy": traj.backends.get("policy"),
            "renderer": traj.backends.get("renderer"), "termination": traj.termination,
            "has_errors": has_errors, "n_rounds": len(traj.steps), "n_tool_calls": len(traj.tool_calls()),
            "elapsed_s": traj.elapsed_s,
            "program": json_text(traj.program.model_dump()) if traj.program else None,
            "trajectory": json_text(traj.to_dict()),
            "source": traj.meta.get("source") or ("studio" if traj.meta.get("session") else "cli"),
        }
        cols = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        updates = ", ".join(f"{k}=excluded.{k}" for k in row if k != "id")
        with self.connect() as db:
            db.execute(f"INSERT INTO runs ({cols}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {updates}", row)

    def attach_render(self, run_id: str, image_path: str | None, render: dict | None = None,
                      verification: dict | None = None) -> None:
        ok = None
        if verification is not None and verification.get("text_score") is not None:
            ok = int(verification.get("text_score", 0) >= 1.0)
        with self.connect() as db:
            db.execute("UPDATE runs SET image_path=?, render=?, verification=?, verified_ok=? WHERE id=?",
                       (image_path, json.dumps(render) if render else None,
                        json.dumps(verification) if verification else None, ok, run_id))

    def get_trajectory(self, run_id: str) -> Trajectory | None:
        with self.connect() as db:
            row = db.execute("SELECT trajectory FROM runs WHERE id=?", (run_id,)).fetchone()
        return Trajectory.from_dict(json.loads(row["trajectory"])) if row else None

    def get_run(self, run_id: str) -> dict | None:
        with self.connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return _run_row(row) if row else None

    def list_runs(self, *, session: str | None = None, policy: str | None = None, source: str | None = None,
                  termination: str | None = None, has_errors: bool | None = None,
                  verification_failed: bool | None = None, audited: bool | None = None,
                  limit: int = 200) -> list[dict]:
        where, args = [], []
        if session is not None:
            where.append("session=?"); args.append(session)
        if policy:
            where.append("policy=?"); args.append(policy)
        if source:
            where.append("source=?"); args.append(source)
        if termination:
            where.append("termination=?"); args.append(termination)
        if has_errors is not None:
            where.append("has_errors=?"); args.append(int(has_errors))
        if verification_failed is not None:
            where.append("verified_ok=?" if not verification_failed else "verified_ok=0")
            if not verification_failed:
                args.append(1)
        if audited is not None:
            op = "EXISTS" if audited else "NOT EXISTS"
            where.append(f"{op} (SELECT 1 FROM audits a WHERE a.trajectory_id=runs.id)")
        sql = ("SELECT id, created_at, session, request, policy, renderer, termination, has_errors, n_rounds, "
               "n_tool_calls, elapsed_s, image_path, verified_ok, source FROM runs")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        with self.connect() as db:
            return [dict(r) for r in db.execute(sql, args).fetchall()]

    # ------------------------------------------------------------------ audits

    def add_audit(self, trajectory_id: str, verdict: str, comment: str = "", step: int | None = None,
                  annotator: str | None = None, fix: str | None = None) -> None:
        with self.connect() as db:
            db.execute("INSERT INTO audits (trajectory_id, step, verdict, comment, annotator, created_at, fix) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (trajectory_id, step, verdict, comment, annotator, time.time(), fix or None))

    def audits(self, trajectory_id: str) -> list[dict]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM audits WHERE trajectory_id=? ORDER BY id", (trajectory_id,)).fetchall()
        return [dict(r) for r in rows]

    def latest_verdict(self, trajectory_id: str) -> str | None:
        with self.connect() as db:
            row = db.execute("SELECT verdict FROM audits WHERE trajectory_id=? AND step IS NULL "
                             "ORDER BY id DESC LIMIT 1", (trajectory_id,)).fetchone()
        return row["verdict"] if row else None

    def step_verdicts(self, trajectory_id: str) -> dict[int, dict]:
        """The latest audit of each audited step (round number -> audit row)."""
        latest: dict[int, dict] = {}
        for a in self.audits(trajectory_id):
            if a.get("step") is not None:
                latest[int(a["step"])] = a
        return latest

    def export_sft(self, out_dir: str | Path, *, accepted_only: bool = True, ids: list[str] | None = None) -> Path:
        """Write SFT records (one JSON per line) with copied images; returns the jsonl path."""
        return Path(self.export_sft_report(out_dir, accepted_only=accepted_only, ids=ids)["path"])

    def export_sft_report(self, out_dir: str | Path, *, accepted_only: bool = True,
                          ids: list[str] | None = None) -> dict:
        """Export SFT records honouring the annotators' verdicts; say what was left out and why.

        With ``accepted_only`` a trajectory goes out only when its latest whole verdict is
        *accept* and none of its steps' latest verdicts is *reject*. A step marked *needs fix*
        goes out with the annotator's fix as that assistant turn, or, without a fix, keeps the
        whole trajectory out (training on a turn a person flagged would teach the flaw). A fix
        that changes a tool call (another tool, other arguments, or an answer instead) ends the
        record at the fix: the recorded tool response answered the old call, and pairing it with
        the new one would teach the model replies its call never got.
        Returns ``{"path", "exported", "fixed": [ids], "cut": {id: why}, "excluded": {id: reason}}``.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if ids is None:
            with self.connect() as db:
                ids = [r["id"] for r in db.execute("SELECT id FROM runs WHERE program IS NOT NULL "
                                                   "ORDER BY created_at").fetchall()]
        path = out_dir / "sft.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        report: dict = {"path": str(path), "exported": 0, "fixed": [], "cut": {}, "excluded": {}}
        with open(tmp, "w", encoding="utf-8") as f:
            for run_id in ids:
                if accepted_only and self.latest_verdict(run_id) != "accept":
                    continue
                traj = self.get_trajectory(run_id)
                if traj is None or traj.program is None:
                    continue
                fixes: dict[int, str] = {}
                if accepted_only:
                    problem = None
                    for rnd, audit in sorted(self.step_verdicts(run_id).items()):
                        if audit["verdict"] == "reject":
                            problem = f"step {rnd} rejected"
                        elif audit["verdict"] == "needs_fix" and not (audit.get("fix") or "").strip():
                            problem = f"step {rnd} needs a fix and has none"
                        elif audit["verdict"] == "needs_fix":
                            fixes[rnd] = audit["fix"]
                        if problem:
                            break
                    if problem:
                        report["excluded"][run_id] = problem
                        continue
                record = traj.to_sft_record(out_dir)
                if fixes:
                    cut = _apply_fixes(record, traj, fixes, out_dir)
                    report["fixed"].append(run_id)
                    if cut is not None:
                        report["cut"][run_id] = cut
                f.write(json_text(record) + "\n")
                report["exported"] += 1
        tmp.replace(path)
        return report

    # ------------------------------------------------------------------ guides

    def add_guide(self, guide: dict, embedding: bytes | None = None, capacity: int | None = None) -> str:
        """Insert a Decision Guide; with ``capacity`` the oldest beyond it are evicted."""
        gid = guide.get("id") or uuid.uuid4().hex[:12]
        with self.connect() as db:
            db.execute("INSERT OR REPLACE INTO guides (id, created_at, trigger, summary, guidance, source_prompt, "
                       "reward_gap, embedding, times_retrieved, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (gid, guide.get("created_at", time.time()), guide["trigger"], guide["summary"],
                        json.dumps(guide.get("guidance", {})), guide.get("source_prompt"),
                        guide.get("reward_gap"), embedding, int(guide.get("times_retrieved", 0)),
                        json.dumps(guide.get("meta", {}))))
            if capacity is not None:
                db.execute("DELETE FROM guides WHERE id NOT IN "
                           "(SELECT id FROM guides ORDER BY created_at DESC, rowid DESC LIMIT ?)", (capacity,))
        return gid

    def list_guides(self) -> list[dict]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM guides ORDER BY created_at, rowid").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["guidance"] = json.loads(d["guidance"] or "{}")
            d["meta"] = json.loads(d["meta"] or "{}")
            out.append(d)
        return out

    def delete_guides(self, *, run: str, after_step: int = 0) -> int:
        """Delete the guides a training run wrote after ``after_step`` (its ``meta.run`` / ``meta.step``)."""
        with self.connect() as db:
            cur = db.execute("DELETE FROM guides WHERE json_extract(meta, '$.run') = ? "
                             "AND json_extract(meta, '$.step') > ?", (run, after_step))
            return cur.rowcount

    def bump_guide(self, guide_id: str) -> None:
        with self.connect() as db:
            db.execute("UPDATE guides SET times_retrieved = times_retrieved + 1 WHERE id=?", (guide_id,))

    # ------------------------------------------------------------------ jobs

    def create_job(self, kind: str, config: dict, run_dir: str) -> str:
        job_id = uuid.uuid4().hex[:10]
        now = time.time()
        with self.connect() as db:
            db.execute("INSERT INTO jobs (id, kind, config, status, run_dir, created_at, updated_at) "
                       "VALUES (?, ?, ?, 'queued', ?, ?, ?)", (job_id, kind, json.dumps(config), run_dir, now, now))
        return job_id

    def update_job(self, job_id: str, **fields: Any) -> None:
        allowed = {"status", "pid", "message", "run_dir"}
        sets = {k: v for k, v in fields.items() if k in allowed}
        sets["updated_at"] = time.time()
        cols = ", ".join(f"{k}=?" for k in sets)
        with self.connect() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*sets.values(), job_id))

    def get_job(self, job_id: str) -> dict | None:
        with self.connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return dict(row) if row else None

    def list_jobs(self, limit: int = 50) -> list[dict]:
        with self.connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))]


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Columns added after a store was first created (an older file keeps its rows)."""
    for table, column in (("runs", "source"), ("audits", "fix")):
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")


def _apply_fixes(record: dict, traj: Trajectory, fixes: dict[int, str], out_dir: Path | None = None) -> str | None:
    """Replace the assistant turns of fixed steps (the n-th assistant message is the n-th step).

    When a fix changes what the turn asked of a tool, everything after it is cut (the images
    those messages carried too) and the reason is returned; else None."""
    from genevolve.protocol import parse_turn

    assistant = [i for i, m in enumerate(record["messages"]) if m["role"] == "assistant"]
    steps = [s for s in traj.steps if s.kind in ("tool_call", "answer", "format_error")]
    for step, index in zip(steps, assistant):
        if step.round not in fixes:
            continue
        record["messages"][index]["content"] = fixes[step.round]
        if step.kind != "tool_call":
            continue
        turn = parse_turn(fixes[step.round])
        same = (turn.kind == "tool_call" and turn.tool_call is not None and turn.tool_call.name == step.tool_name
                and turn.tool_call.arguments == (step.tool_arguments or {}))
        if same:
            continue
        dropped = record["messages"][index + 1:]
        del record["messages"][index + 1:]
        kept_images = sum(m["content"].count("<image>") for m in record["messages"])
        for rel in record["images"][kept_images:]:
            if out_dir is not None:
                (Path(out_dir) / rel).unlink(missing_ok=True)
        record["images"] = record["images"][:kept_images]
        what = "the tool call" if turn.kind == "tool_call" else "a tool call into an answer"
        return (f"step {step.round}: the fix changes {what}, so the record ends at the fix "
                f"({len(dropped)} later messages, with the stale tool response, left out)")
    return None


def _run_row(row: sqlite3.Row) -> dict:
    d = dict(row)
    for key in ("program", "trajectory", "render", "verification"):
        if d.get(key):
            d[key] = json.loads(d[key])
    return d
