"""The resumable benchmark runner: rollout -> render -> judge, three stages, parallel workers.

Output folder::

    run.json                 the run's configuration (specs, bench, seed)
    cases.jsonl              the cases of this run (so a summary needs no bench path)
    rollout.jsonl            one line per case per stage, appended, flushed and fsynced
    render.jsonl
    judge.jsonl
    cases/<id>/trajectory.json, program.json, image.png, scores.json   (written atomically)

The stages run on ``genevolve.batch``: a stage line is appended only after the case's
artifacts are in place, a torn last line is cut off on start, and ``resume=True`` skips every
case whose stage line exists, so a killed run finishes with every case exactly once per stage.

Parallelism: threads, one agent and renderer per worker (the backends that matter wait on I/O:
HTTP policies, renderer services, judge APIs). A local model policy (``hf:``/``nano``) or a local diffusers renderer
gets one worker, since threads would only fight over the same weights.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from genevolve.batch import BatchRun, PerThread, Shared, Stage, claim_folder
# Crash-safe file helpers live in genevolve.durable; the summary and report read runs through these names.
from genevolve.durable import latest_by_id, read_jsonl, repair_jsonl, save_image_atomic, write_atomic  # noqa: F401
from genevolve.specs import spec_kind

STAGES = ("rollout", "render", "judge")


class RunDirError(RuntimeError):
    """The output folder holds another run (or results without --resume)."""


def case_dir_name(case_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", case_id)[:80]
    # "." and ".." (or dots only) would name the run folder or its parent, not a folder of their own.
    if safe == case_id and safe.strip("."):
        return safe
    return f"{safe.replace('.', '_')}-{zlib.crc32(case_id.encode('utf-8', 'surrogatepass')):08x}"


def case_seed(case_id: str, base_seed: int) -> int:
    """A render seed fixed by the case id, so a resumed run draws what a fresh one would."""
    return (base_seed + zlib.crc32(case_id.encode("utf-8"))) % (2**31)


# ---------------------------------------------------------------- configuration

@dataclass
class BenchConfig:
    bench: str = "mini"
    policy: str = "planner"
    renderer: str = "layout"
    judge: str = "local"
    parallel: int = 2
    limit: int | None = None
    rpm: int | None = None
    seed: int = 0
    size: tuple[int, int] | None = None  # render size (width, height); None = the renderer's default
    retries: int = 2  # stage-level retries for unexpected exceptions (API judges retry on their own)
    backoff_s: float = 1.0
    offline: bool | None = None
    settings_path: str | None = None
    protocol: str | None = None  # the conversation profile (genevolve.profiles); None: settings / the policy's
    extra: dict = field(default_factory=dict)

    def identity(self) -> dict:
        """What must match for a resumed run to continue the same experiment."""
        ident = {"bench": self.bench, "policy": self.policy, "renderer": self.renderer, "judge": self.judge,
                 "seed": self.seed, "limit": self.limit, "size": list(self.size) if self.size else None}
        if self.protocol:  # only when chosen, so runs recorded before profiles existed still resume
            ident["protocol"] = self.protocol
        return ident


def workers_for(stage: str, cfg: BenchConfig) -> int:
    p = max(1, int(cfg.parallel))
    if stage == "rollout" and spec_kind(cfg.policy) in ("hf", "nano"):
        return 1
    if stage == "render" and spec_kind(cfg.renderer) == "diffusers":
        return 1
    return p


# ---------------------------------------------------------------- the runner

class BenchRunner:
    stages = STAGES

    def __init__(self, cases: list[dict], out_dir: str | Path, config: BenchConfig, *, resume: bool = False,
                 progress: bool = True, log: Callable[[str], None] | None = None):
        self.cases = cases[: config.limit] if config.limit else list(cases)
        self.out = Path(out_dir)
        self.cfg = config
        self.resume = resume
        self.log = log or (lambda msg: None)
        self.batch = BatchRun(self.out, progress=progress, log=self.log)
        self._settings = None
        self._agent = PerThread(self._build_agent)
        self._renderer = PerThread(self._build_renderer)
        self.judge = Shared(self._build_judge)  # judges are thread-safe; one instance shares the endpoint limiter

    # ------------------------------------------------------------ setup

    def _prepare(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        run_file = self.out / "run.json"
        claim_folder(self.out, run_file, self.cfg.identity(), resume=self.resume, what="run", error=RunDirError,
                     taken=any((self.out / f"{s}.jsonl").exists() for s in STAGES))
        if not run_file.exists():
            write_atomic(run_file, json.dumps({"identity": self.cfg.identity(), "parallel": self.cfg.parallel,
                                               "rpm": self.cfg.rpm, "created_at": time.time()}, indent=2))
        # A resumed run keeps the cases it had and adds the new ones (a larger --limit on the same
        # stratified sample): every stored row must find its case for a later summary or remeasure.
        cases_file = self.out / "cases.jsonl"
        kept = read_jsonl(cases_file) if self.resume and cases_file.exists() else []
        have = {c.get("id") for c in kept}
        added = [c for c in self.cases if c.get("id") not in have]
        if not cases_file.exists() or not self.resume or added:
            write_atomic(cases_file, "".join(json.dumps(c, ensure_ascii=False, default=str) + "\n"
                                             for c in kept + added))
        # A kill during an atomic write leaves its temporary file behind; the real file is intact.
        for tmp in (self.out / "cases").glob("*/.*.tmp"):
            tmp.unlink(missing_ok=True)
        if self.cfg.rpm:
            from genevolve.judges.rate_limit import set_default_rpm

            set_default_rpm(self.cfg.rpm)

    def settings(self):
        if self._settings is None:
            from genevolve.config import Settings

            self._settings = Settings.load(self.cfg.settings_path, policy=self.cfg.policy,
                                           renderer=self.cfg.renderer, judge=self.cfg.judge,
                                           offline=self.cfg.offline, protocol=self.cfg.protocol)
        return self._settings

    def case_dir(self, case: dict) -> Path:
        return self.out / "cases" / case_dir_name(case["id"])

    # ------------------------------------------------------------ backends (built lazily: heavy imports)

    def _build_agent(self):
        from genevolve.agent import build_agent

        settings = self.settings()
        return build_agent(settings, offline=settings.resolved_offline())

    def _build_renderer(self):
        from genevolve.renderers import make_renderer

        return make_renderer(self.cfg.renderer)

    def _build_judge(self):
        from genevolve.judges import make_judge

        return make_judge(self.cfg.judge)

    # ------------------------------------------------------------ the three stages

    def roll_out(self, case: dict):
        """Run the agent on ``case`` and keep its trajectory and program under ``cases/<id>/``;
        returns the trajectory and the seconds the agent took."""
        d = self.case_dir(case)
        started = time.perf_counter()
        traj = self._agent().run(case["question"], [p for p in case.get("images") or [] if isinstance(p, str)])
        seconds = time.perf_counter() - started
        write_atomic(d / "trajectory.json", json.dumps(traj.to_dict(), ensure_ascii=False, indent=1, default=str))
        if traj.program is not None:
            write_atomic(d / "program.json", json.dumps(traj.program.model_dump(), ensure_ascii=False, indent=1))
        else:  # a re-run after a crash must not leave an older attempt's program behind
            (d / "program.json").unlink(missing_ok=True)
        return traj, seconds

    def do_rollout(self, case: dict) -> dict:
        traj, _seconds = self.roll_out(case)
        calls = traj.tool_calls()
        return {"status": "ok" if traj.program is not None else "failed", "termination": traj.termination,
                "error": traj.reason if traj.program is None else None, "rounds": len(traj.steps),
                "tools": [s.tool_name for s in calls], "skills": traj.skills_used(),
                "references": len(traj.program.reference_images) if traj.program else 0,
                "warnings": len(traj.warnings), "elapsed_s": round(traj.elapsed_s, 4)}

    def do_render(self, case: dict) -> dict:
        from genevolve.program import Program

        d = self.case_dir(case)
        program_file = d / "program.json"
        if not program_file.exists():
            return {"status": "skipped", "error": "no program (the rollout failed)"}
        from genevolve.renderers import render_with_report

        program = Program.model_validate_json(program_file.read_text(encoding="utf-8"))
        started = time.perf_counter()
        image, report = render_with_report(self._renderer(), program, size=self.cfg.size,
                                           seed=case_seed(case["id"], self.cfg.seed))
        save_image_atomic(image, d / "image.png")
        # What the renderer says it drew: the judge stage (maybe a later process) checks structure from it.
        write_atomic(d / "render.json", json.dumps(_jsonable(report), ensure_ascii=False, indent=1))
        return {"status": "ok", "image": str((d / "image.png").relative_to(self.out)),
                "report": _jsonable(report), "elapsed_s": round(time.perf_counter() - started, 4)}

    def do_judge(self, case: dict) -> dict:
        from genevolve.program import Program
        from genevolve.trajectory import Trajectory

        d = self.case_dir(case)
        program = traj = None
        if (d / "program.json").exists():
            program = Program.model_validate_json((d / "program.json").read_text(encoding="utf-8"))
        if (d / "trajectory.json").exists():
            traj = Trajectory.from_dict(json.loads((d / "trajectory.json").read_text(encoding="utf-8")))
        image = d / "image.png" if (d / "image.png").exists() else None
        render = None
        if image is not None and (d / "render.json").exists():
            render = json.loads((d / "render.json").read_text(encoding="utf-8"))
        scores = self.judge().score(case, image, program, trajectory=traj, render=render)
        write_atomic(d / "scores.json", scores.model_dump_json(indent=1))
        row = scores.model_dump(exclude={"raw"})
        row["score_status"] = row.pop("status")
        row["status"] = "ok" if scores.status == "scored" else "failed"
        return row

    # ------------------------------------------------------------ driving

    def run(self) -> dict:
        self._prepare()
        return self.batch.run([self.stage(name) for name in self.stages], self.cases)

    def stage(self, name: str) -> Stage:
        """Stage ``name`` (its work: ``do_<name>``); its rows carry the case's bench fields."""
        meta_keys = ("eval_type", "category", "difficulty", "track")
        return Stage(name, getattr(self, f"do_{name}"), workers=workers_for(name, self.cfg),
                     retries=self.cfg.retries, backoff_s=self.cfg.backoff_s,
                     head=lambda case: {"stage": name, **{k: case.get(k) for k in meta_keys}})


def _jsonable(obj):
    try:
        json.dumps(obj)
        return obj
    except TypeError:
        return json.loads(json.dumps(obj, default=str))


def run_bench(cases: list[dict], out_dir: str | Path, config: BenchConfig, **kw) -> dict:
    return BenchRunner(cases, out_dir, config, **kw).run()
