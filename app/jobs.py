"""Background jobs: training runs as subprocesses that outlive the page (and the request that started them).

A job is a row in the store's jobs table plus a process in its own session (so stopping it
stops its children, and closing the browser does not touch it). The page only reads: status
from the table and the process, curves from the run dir's ``metrics.jsonl``, text from
``log.txt``. After a studio restart a running job is re-attached by its pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from app import storage

LOG_NAME = "log.txt"
_watchers: dict[str, threading.Thread] = {}


def jobs_root() -> Path:
    path = storage.studio_home().parent / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def train_command(kind: str, config_path: str, run_dir: str, max_steps: int | None = None) -> list[str]:
    """``genevolve train KIND`` for a job; run again unchanged, it resumes from the run folder's
    latest checkpoint (the trainer's default), so a resume needs no option of its own."""
    cmd = [sys.executable, "-m", "genevolve.cli", "train", kind, "--config", str(config_path), "--run-dir", run_dir]
    if max_steps:
        cmd += ["--max-steps", str(int(max_steps))]
    return cmd


def start(kind: str, config_path: str, *, job_id: str | None = None, max_steps: int | None = None) -> str:
    """Start a training job, or with ``job_id`` restart it (it resumes); returns the job id."""
    st = storage.store()
    config_path = str(Path(config_path).resolve())
    if job_id is None:
        config = {"path": config_path, "kind": kind, "max_steps": max_steps}
        job_id = st.create_job(kind, config, "")
        run_dir = jobs_root() / job_id
        st.update_job(job_id, run_dir=str(run_dir))
        run_dir.mkdir(parents=True, exist_ok=True)
        job_config = _config_for_job(config_path, run_dir)
    else:
        job = st.get_job(job_id)
        run_dir = Path(job["run_dir"])
        job_config = run_dir / "job_config.yaml"
        max_steps = json.loads(job["config"] or "{}").get("max_steps")
    cmd = train_command(kind, str(job_config), str(run_dir), max_steps=max_steps)
    _spawn(job_id, cmd, run_dir)
    return job_id


def start_bench(bench: str, limit: int | None, policy: str = "planner", renderer: str = "layout",
                judge: str = "local") -> tuple[str, Path]:
    """Run a bench in the background (``genevolve bench run``); returns (job id, run dir)."""
    st = storage.store()
    config = {"bench": bench, "limit": limit, "policy": policy, "renderer": renderer, "judge": judge}
    job_id = st.create_job("bench", config, "")
    run_dir = storage.studio_home().parent / "bench" / time.strftime(f"%Y%m%d-%H%M%S-{job_id[:4]}")
    run_dir.mkdir(parents=True, exist_ok=True)
    st.update_job(job_id, run_dir=str(run_dir))
    cmd = [sys.executable, "-m", "genevolve.cli", "bench", "run", "--bench", bench, "--out", str(run_dir),
           "--policy", policy, "--renderer", renderer, "--judge", judge, "--offline", "--no-progress"]
    if limit:
        cmd += ["--limit", str(int(limit))]
    if os.environ.get("GENEVOLVE_STUDIO_CONFIG"):  # the studio's own settings file applies to its bench runs too
        cmd += ["--config", os.environ["GENEVOLVE_STUDIO_CONFIG"]]
    _spawn(job_id, cmd, run_dir)
    return job_id, run_dir


def _spawn(job_id: str, cmd: list[str], run_dir: Path) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(run_dir / LOG_NAME, "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(Path(__file__).resolve().parents[1]), env=env, start_new_session=True)
    storage.store().update_job(job_id, status="running", pid=proc.pid, message=" ".join(cmd[2:]))
    watcher = threading.Thread(target=_watch, args=(job_id, proc), daemon=True, name=f"job-{job_id}")
    watcher.start()
    _watchers[job_id] = watcher


def _config_for_job(config_path: str, run_dir: Path) -> Path:
    """A copy of the config whose ``run_dir`` is the job's folder (the original stays untouched)."""
    import yaml

    text = Path(config_path).read_text(encoding="utf-8")
    data = json.loads(text) if config_path.endswith(".json") else yaml.safe_load(text)
    data = dict(data or {})
    data["run_dir"] = str(run_dir)
    if isinstance(data.get("sdl"), dict):
        # Guides a studio job distils go to the studio's store, where the Decision Guides tab reads them.
        data["sdl"] = {**data["sdl"], "store_path": storage.settings().store_path}
    out = run_dir / "job_config.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def _watch(job_id: str, proc: subprocess.Popen) -> None:
    code = proc.wait()
    st = storage.store()
    job = st.get_job(job_id)
    if job is None or job.get("pid") != proc.pid:
        return  # a resume replaced this process
    if job["status"] == "stopped":
        return
    st.update_job(job_id, status="done" if code == 0 else "failed",
                  message=f"exit code {code}" + ("" if code == 0 else f" — see {LOG_NAME}"))


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a finished child we have not reaped is a zombie, not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def refresh(job: dict) -> dict:
    """Mark a 'running' job whose process vanished (studio restarted, machine rebooted)."""
    if job["status"] == "running" and job["pid"] not in _own_pids() and not pid_alive(job["pid"]):
        done = _run_state(job["run_dir"]) in ("done", "finished", "completed")
        storage.store().update_job(job["id"], status="done" if done else "failed",
                                  message="process ended while the studio was not watching")
        job = storage.store().get_job(job["id"])
    return job


def _own_pids() -> set[int]:
    """Jobs this studio process is watching (their watcher thread records the end itself)."""
    out = set()
    for job_id, thread in _watchers.items():
        if thread.is_alive():
            job = storage.store().get_job(job_id)
            if job and job.get("pid"):
                out.add(job["pid"])
    return out


def run_status(run_dir: str | None) -> dict:
    """The trainer's own word on its progress (status.json in the run dir), when it wrote one."""
    path = Path(run_dir or ".") / "status.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _run_state(run_dir: str | None) -> str | None:
    return run_status(run_dir).get("state")


def stop(job_id: str) -> str:
    st = storage.store()
    job = st.get_job(job_id)
    if job is None:
        return "no such job"
    if job["status"] != "running" or not pid_alive(job["pid"]):
        return f"job {job_id} is not running ({job['status']})"
    st.update_job(job_id, status="stopped", message="stopped from the studio")
    try:
        os.killpg(job["pid"], signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.time() + 10
    while time.time() < deadline and pid_alive(job["pid"]):
        time.sleep(0.1)
    if pid_alive(job["pid"]):
        os.killpg(job["pid"], signal.SIGKILL)
    return f"job {job_id} stopped"


def resume(job_id: str) -> str:
    job = storage.store().get_job(job_id)
    if job is None:
        return "no such job"
    if job["status"] == "running" and pid_alive(job["pid"]):
        return f"job {job_id} is already running"
    config = json.loads(job["config"] or "{}")
    if job["kind"] not in ("sft", "grpo"):
        return f"job {job_id} ({job['kind']}) cannot be resumed from here"
    start(job["kind"], config["path"], job_id=job_id)
    return f"job {job_id} resumed"


def metrics(run_dir: str | None) -> list[dict]:
    """Rows of ``metrics.jsonl`` wherever the trainer put it inside the run dir (a torn last line is skipped)."""
    if not run_dir:
        return []
    root = Path(run_dir)
    paths = [root / "metrics.jsonl"] if (root / "metrics.jsonl").is_file() else sorted(root.glob("**/metrics.jsonl"))
    rows = []
    for path in paths[:1]:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return rows


def log_tail(run_dir: str | None, n_bytes: int = 12000) -> str:
    if not run_dir:
        return ""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - n_bytes))
        return f.read().decode("utf-8", "replace")
