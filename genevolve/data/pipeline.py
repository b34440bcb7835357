"""The SFT data pipeline: recipes -> teacher trajectories -> filters -> ground-truth renders -> splits.

Layout of an output folder ``DIR``::

    recipes.jsonl            the requests (one recipe per line)
    build.json               what must match for ``--resume`` to continue the same build
    stages/trajectories.jsonl  one line per recipe: the teacher's full trajectory
    stages/filters.jsonl     one line per trajectory: kept or not, and why
    stages/gt.jsonl          one line per kept trajectory: its GT render, text check and SFT record
    gt/<id>.png              ground-truth renders of kept programs
    images/                  every image an SFT record shows the model (copied, so DIR is portable)
    train.jsonl, val.jsonl   SFT records ``{"messages", "images", ...}`` of the ``sft`` split, image paths
                             relative to DIR
    rl_prompts.jsonl         the ``rl`` split as bench rows: the GRPO prompt pool
    eval.jsonl               the ``eval`` split as bench rows, each with the teacher's skills, rounds and
                             program: held out for the ablation
    manifest.json            counts per stage, split and category, rejection reasons, settings, seed

The three splits are disjoint by request and by named entity (see ``genevolve.data.recipes``).

The stages run on ``genevolve.batch``: all trajectories, then all filters, then GT for the kept
ones. Stage files are append-only ledgers and a line is written only when its work is finished, so a
killed build loses at most the recipes in flight; ``resume=True`` skips every (recipe, stage) already
on disk. Splits and the manifest are rewritten from the stage files at the end of every build.
Everything that goes into the records depends only on the seed and the recipes: the trajectory id
is the recipe id (it names the copied images), the render seed is a hash of (seed, id), and the
split is a hash of (seed, id), so a build is byte-for-byte repeatable and worker order is free.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from genevolve.batch import BatchRun, PerThread, Shared, Stage, claim_folder
from genevolve.data.recipes import generate_recipes
from genevolve.durable import save_image_atomic, write_atomic
from genevolve.specs import spec_kind

STAGES = ("trajectories", "filters", "gt")
# zlib level for GT renders: level 1 writes a layout render ~5x faster than Pillow's default (6)
# for ~20% more bytes (measured in docs/bench/data.md); the PNG stays lossless.
GT_PNG_COMPRESS_LEVEL = 1


class BuildSetupError(RuntimeError):
    """The build cannot start (a bad folder or backend spec); the message says what to do."""


class BuildDirError(BuildSetupError):
    """The output folder holds another build."""


@dataclass
class BuildConfig:
    recipes: int = 64
    teacher: str = "planner"  # any policy spec
    renderer: str = "layout"  # any renderer spec
    seed: int = 0
    parallel: int = 2
    val_fraction: float = 0.1
    min_sufficiency: float = 0.75  # the local sufficiency judge scores in quarters
    size: tuple[int, int] | None = None  # GT render size; None = the renderer's default
    judge: str = "sufficiency"  # sufficiency[:<model>@<base_url>]
    offline: bool | None = None  # None: Settings decide (auto-detect)
    settings_path: str | None = None
    avoid: list[str] | None = None  # bench files the requests must stay clear of, besides the mini bench
    protocol: str | None = None  # the conversation profile the records are written in (nano: the compact one)
    # Share of sft recipes run with only ``budget_rounds`` rounds, so the teacher is told mid-research
    # that tool calls are over and answers anyway: a student must see that message obeyed.
    budget_fraction: float = 0.0
    budget_rounds: int = 3
    # Hold out an RL prompt pool and an eval split, disjoint from the SFT records by request and
    # named entity; off: every recipe is SFT data.
    held_out: bool = False
    # Share of recipes with human variety (genevolve.data.variety) instead of the templates.
    variety: float = 0.0
    # RL recipes about a picture (given or named) added after ``recipes`` (generate_recipes).
    rl_pictures: int = 0
    # SFT recipes naming a library subject, added after those (generate_recipes).
    sft_pictures: int = 0
    # SFT recipes asking a library subject in a colour its picture contradicts, after those.
    sft_near_misses: int = 0

    def identity(self) -> dict:
        """What a resumed build must share with the original (parallelism may change)."""
        return {"recipes": self.recipes, "teacher": self.teacher, "renderer": self.renderer, "seed": self.seed,
                "val_fraction": self.val_fraction, "min_sufficiency": self.min_sufficiency,
                "size": list(self.size) if self.size else None, "judge": self.judge,
                "avoid": [str(p) for p in self.avoid or []], "protocol": self.protocol,
                "budget_fraction": self.budget_fraction, "budget_rounds": self.budget_rounds,
                "held_out": self.held_out,
                # Only when set, so builds made before the option resume as they were.
                **({"variety": self.variety} if self.variety else {}),
                **({"rl_pictures": self.rl_pictures} if self.rl_pictures else {}),
                **({"sft_pictures": self.sft_pictures} if self.sft_pictures else {}),
                **({"sft_near_misses": self.sft_near_misses} if self.sft_near_misses else {})}


@dataclass
class FilterResult:
    kept: bool
    reasons: list[str] = field(default_factory=list)
    sufficiency: float | None = None
    checks: dict = field(default_factory=dict)


# ---------------------------------------------------------------- filters

def filter_trajectory(trajectory, recipe: dict, judge, min_sufficiency: float,
                      max_references: int = 2, *, budgeted: bool = False) -> FilterResult:
    """Keep a teacher trajectory only if it is clean training data.

    Rejected: no program; termination other than a plain answer (forced answers, format and
    policy errors, max rounds); any format error on the way (the SFT record would teach the
    broken turn); a program the runtime had to repair (the answer in the messages is not the
    program that was kept); an invalid program; a fact or reference whose source is about nothing
    the request names (``genevolve.relevance``); a sufficiency score below the threshold.
    A ``budgeted`` trajectory (run with few rounds on purpose) keeps its forced answer, and its
    threshold is at most 0.5: it could not consult everything it would have.
    """
    from genevolve.program import validate_program
    from genevolve.relevance import irrelevant_content

    reasons: list[str] = []
    if trajectory.program is None:
        reasons.append("no_program")
    if budgeted:
        min_sufficiency = min(min_sufficiency, 0.5)
    if trajectory.termination not in (("answer", "forced_answer") if budgeted else ("answer",)):
        reasons.append(f"termination_{trajectory.termination}")
    if any(s.kind == "format_error" for s in trajectory.steps):
        reasons.append("format_error")
    if any(w.startswith("program repaired") for w in trajectory.warnings):
        reasons.append("program_repaired")
    if trajectory.program is None:
        return FilterResult(kept=False, reasons=reasons)
    known = {i.img_id for i in trajectory.images}
    issues = validate_program(trajectory.program, known, max_references)
    reasons.extend(f"invalid_program_{i.code}" for i in issues)
    # A fact or picture about something the request never names would teach the student to carry it.
    off_topic = irrelevant_content(trajectory, recipe["request"])
    if off_topic["facts"]:
        reasons.append("irrelevant_fact")
    if off_topic["references"]:
        reasons.append("irrelevant_reference")
    case = {"id": recipe["id"], "question": recipe["request"], "category": recipe.get("category"),
            "track": recipe.get("track")}
    scores = judge.score_program(case, trajectory)
    value = scores.sufficiency if getattr(scores, "status", "ok") != "failed" else None
    if value is None:
        reasons.append("sufficiency_failed")
    elif value < min_sufficiency:
        reasons.append("low_sufficiency")
    checks = dict((scores.details or {}).get("checks") or {})
    for name, passed in checks.items():
        if value is not None and value < min_sufficiency and not passed:
            reasons.append(f"sufficiency_{name}")
    return FilterResult(kept=not reasons, reasons=reasons, sufficiency=value, checks=checks)


# ---------------------------------------------------------------- helpers

def stable_fraction(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by (seed, key): the same on every machine and Python run."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def render_seed(seed: int, key: str) -> int:
    return int(stable_fraction(seed, "render:" + key) * 2**31)


def _jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in rows)


# ---------------------------------------------------------------- the builder

class DatasetBuilder:
    def __init__(self, out_dir: str | Path, config: BuildConfig, *, settings=None, resume: bool = False,
                 progress: bool = True, log: Callable[[str], None] | None = None):
        self.out = Path(out_dir)
        self.cfg = config
        self.resume = resume
        self.log = log or (lambda msg: None)
        self._settings = settings
        self.batch = BatchRun(self.out / "stages", progress=progress, log=self.log)
        self._teacher = Shared(self._make_policy)  # one teacher for every thread (but a replay script)
        self._tools = PerThread(self._build_tools)
        self._renderer = PerThread(self._build_renderer)
        self._agent_per_thread = PerThread(self._build_agent)
        self.judge = Shared(self._build_judge)

    # ------------------------------------------------------------ setup

    def settings(self):
        if self._settings is None:
            from genevolve.config import Settings

            self._settings = Settings.load(self.cfg.settings_path, offline=self.cfg.offline)
        wanted = (self.cfg.teacher, self.cfg.renderer, self.cfg.protocol or self._settings.protocol)
        if (self._settings.policy, self._settings.renderer, self._settings.protocol) != wanted:
            # The trajectories' backend record must name the teacher and renderer really used.
            import dataclasses

            self._settings = dataclasses.replace(self._settings, policy=wanted[0], renderer=wanted[1],
                                                 protocol=wanted[2])
        return self._settings

    def _prepare(self) -> list[dict]:
        build_file = self.out / "build.json"
        taken = build_file.exists() or any((self.out / "stages" / f"{s}.jsonl").exists() for s in STAGES)
        claim_folder(self.out, build_file, self.cfg.identity(), resume=self.resume, taken=taken, what="build",
                     error=BuildDirError)
        self._check_backends()
        from genevolve.data.recipes import bench_questions

        try:
            avoid = bench_questions() + (bench_questions(self.cfg.avoid) if self.cfg.avoid else [])
        except (OSError, ValueError) as exc:
            raise BuildSetupError(f"cannot read a bench file to avoid: {exc}") from exc
        (self.out / "stages").mkdir(parents=True, exist_ok=True)
        write_atomic(build_file, json.dumps({"identity": self.cfg.identity()}, indent=2) + "\n")
        settings = self.settings()
        recipes = [r.to_dict() for r in generate_recipes(self.cfg.recipes, self.cfg.seed, held_out=self.cfg.held_out,
                                                         variety=self.cfg.variety, rl_pictures=self.cfg.rl_pictures,
                                                         sft_pictures=self.cfg.sft_pictures,
                                                         sft_near_misses=self.cfg.sft_near_misses,
                                                         corpus_dir=settings.corpus_dir,
                                                         library_dir=settings.library_dir, avoid=avoid)]
        write_atomic(self.out / "recipes.jsonl", _jsonl(recipes))
        return recipes

    # ------------------------------------------------------------ backends (one agent and renderer per thread)

    def _check_backends(self) -> None:
        """Build the teacher and renderer once before any work, so a bad spec fails in a second
        with its own message instead of once per recipe inside the workers."""
        from genevolve.policies import PolicyError
        from genevolve.renderers import RenderError

        try:
            self._make_policy() if self._teacher_is_stateful() else self._teacher()
            self._renderer()
        except (PolicyError, RenderError, ValueError, FileNotFoundError) as exc:
            raise BuildSetupError(f"cannot start the build: {exc}") from exc

    def _teacher_is_stateful(self) -> bool:
        return spec_kind(self.cfg.teacher) == "replay"

    def _workers(self) -> int:
        kind = spec_kind(self.cfg.teacher)
        # A local model is one set of weights (threads would only queue on it); a replay file is one
        # script read in order, so its turns must not be shared out between recipes.
        if kind in ("hf", "nano", "replay") or spec_kind(self.cfg.renderer) == "diffusers":
            return 1
        return max(1, int(self.cfg.parallel))

    def _agent(self):
        if self._teacher_is_stateful():
            return self._build_agent(self._make_policy())  # each recipe replays the script from its first turn
        return self._agent_per_thread()

    def _make_policy(self):
        from genevolve.policies import make_policy

        return make_policy(self.cfg.teacher)

    def _build_agent(self, policy=None):
        from genevolve.agent import build_agent

        return build_agent(self.settings(), policy=self._teacher() if policy is None else policy, tools=self._tools(),
                           offline=self._offline())

    def _offline(self) -> bool:
        return self.settings().resolved_offline()

    def _build_tools(self):
        from genevolve.tools import build_tools

        return build_tools(self.settings(), offline=self._offline())

    def _build_renderer(self):
        from genevolve.renderers import make_renderer

        return make_renderer(self.cfg.renderer)

    def _build_judge(self):
        from genevolve.judges import make_judge

        return make_judge(self.cfg.judge)

    # ------------------------------------------------------------ the three stages of one recipe

    def budget_rounds(self, recipe: dict) -> int | None:
        """The round cap of a budgeted sft recipe (a seeded ``budget_fraction`` of them), else None."""
        if recipe.get("split", "sft") != "sft" or self.cfg.budget_fraction <= 0:
            return None
        hit = stable_fraction(self.cfg.seed, "budget:" + recipe["id"]) < self.cfg.budget_fraction
        return self.cfg.budget_rounds if hit else None

    def do_trajectory(self, recipe: dict) -> dict:
        agent = self._agent()
        budget = self.budget_rounds(recipe)
        if budget is not None:
            import copy
            import dataclasses

            agent = copy.copy(agent)  # a shallow copy: the same policy and tools, a smaller round cap
            agent.config = dataclasses.replace(agent.config, max_rounds=budget)
        traj = agent.run(recipe["request"], recipe.get("images") or [])
        traj.id = recipe["id"]  # names the images copied for the SFT record: keeps builds repeatable
        traj.meta["recipe"] = {k: recipe[k] for k in ("id", "category", "track")}
        return {"trajectory": traj.to_dict()}

    def do_filter(self, recipe: dict, traj_row: dict) -> dict:
        from genevolve.trajectory import Trajectory

        traj = Trajectory.from_dict(traj_row["trajectory"])
        result = filter_trajectory(traj, recipe, self.judge(), self.cfg.min_sufficiency,
                                   self.settings().max_references, budgeted=self.budget_rounds(recipe) is not None)
        return asdict(result)

    def do_gt(self, recipe: dict, traj_row: dict) -> dict:
        """Render the kept program, check its exact text on the render, export the SFT record."""
        from genevolve.renderers import render_with_report
        from genevolve.trajectory import Trajectory

        traj = Trajectory.from_dict(traj_row["trajectory"])
        row: dict = {"kept": False, "reasons": []}
        try:
            image, report = render_with_report(self._renderer(), traj.program, size=self.cfg.size,
                                               seed=render_seed(self.cfg.seed, recipe["id"]))
        except Exception as exc:  # noqa: BLE001 - one bad program must not stop the build
            row["reasons"] = ["render_error"]
            row["error"] = f"{type(exc).__name__}: {exc}"
            return row
        rel = Path("gt") / f"{recipe['id']}.png"
        # A full disk leaves no half-written or temporary file.
        save_image_atomic(image, self.out / rel, compress_level=GT_PNG_COMPRESS_LEVEL)
        row["gt_image"] = rel.as_posix()
        row["render"] = {k: report.get(k) for k in ("backend", "seed", "width", "height")}
        texts = traj.program.text_constraints()
        if texts:
            from genevolve.judges.verify import verify_image

            check = verify_image(image, traj.program)
            row["text_score"] = check["text_score"]
            row["text_missing"] = [c["text"] for c in check["constraints"] if not c["found"]]
            if check["text_score"] is None or check["text_score"] < 1.0:
                row["reasons"] = ["gt_text_mismatch"]
                return row
        record = traj.to_sft_record(self.out)
        row["kept"] = True
        row["record"] = record
        return row

    def stages(self) -> list[Stage]:
        """Teacher trajectory, filters, then GT for the recipes the filters kept."""
        def row(stage: str, recipe: dict) -> dict:
            return self.batch.rows(stage)[recipe["id"]]

        workers = self._workers()
        return [Stage("trajectories", self.do_trajectory, workers),
                Stage("filters", lambda r: self.do_filter(r, row("trajectories", r)), workers),
                Stage("gt", lambda r: self.do_gt(r, row("trajectories", r)), workers,
                      applies=lambda r: row("filters", r)["kept"])]

    # ------------------------------------------------------------ run

    def run(self) -> dict:
        started = time.perf_counter()
        recipes = self._prepare()
        self.batch.run(self.stages(), recipes)
        return self.finish(recipes, time.perf_counter() - started)

    # ------------------------------------------------------------ splits and manifest

    def finish(self, recipes: list[dict], elapsed_s: float = 0.0) -> dict:
        done = {s: self.batch.rows(s) for s in STAGES}
        by_id = {r["id"]: r for r in recipes}
        # Recipes written before splits existed count as sft.
        kept = [r for r in recipes if done["gt"].get(r["id"], {}).get("kept") and r.get("split", "sft") == "sft"]
        val_ids = self._val_ids([r["id"] for r in kept])
        train_rows, val_rows = [], []
        for r in kept:  # recipe order, never completion order: the files are repeatable
            gt = done["gt"][r["id"]]
            row = {**gt["record"], "id": r["id"], "request": r["request"], "category": r["category"],
                   "track": r["track"], "gt_image": gt["gt_image"]}
            (val_rows if r["id"] in val_ids else train_rows).append(row)
        write_atomic(self.out / "train.jsonl", _jsonl(train_rows))
        write_atomic(self.out / "val.jsonl", _jsonl(val_rows))
        held = {split: [self._bench_row(r, done) for r in recipes if r.get("split") == split]
                for split in ("rl", "eval")}
        write_atomic(self.out / "rl_prompts.jsonl", _jsonl(held["rl"]))
        write_atomic(self.out / "eval.jsonl", _jsonl(held["eval"]))
        per_split: dict[str, Counter] = {}
        for r in recipes:
            c = per_split.setdefault(r.get("split", "sft"), Counter())
            c["recipes"] += 1
            c["kept"] += bool(done["gt"].get(r["id"], {}).get("kept"))
        for split, c in per_split.items():
            c["entities"] = len({r.get("entity") for r in recipes if r.get("split", "sft") == split and r.get("entity")})

        reasons: Counter = Counter()
        first_reason: Counter = Counter()
        per_category: dict[str, Counter] = {}
        for r in recipes:
            cat = per_category.setdefault(r["category"], Counter())
            cat["recipes"] += 1
            rid = r["id"]
            if rid in done["trajectories"]:
                cat["trajectories"] += 1
            rejected = []
            if rid in done["filters"]:
                rejected = done["filters"][rid]["reasons"]
                if done["filters"][rid]["kept"]:
                    cat["filter_passed"] += 1
            if rid in done["gt"]:
                rejected = rejected or done["gt"][rid]["reasons"]
                if done["gt"][rid].get("kept"):
                    cat["kept"] += 1
            if rejected:
                cat["rejected"] += 1
                first_reason[rejected[0]] += 1
                reasons.update(rejected)
        counts = {
            "recipes": len(recipes),
            "trajectories": sum(1 for r in recipes if r["id"] in done["trajectories"]),
            "answered": sum(1 for r in recipes
                            if (done["trajectories"].get(r["id"]) or {}).get("trajectory", {}).get("program")),
            "filter_passed": sum(1 for r in recipes if (done["filters"].get(r["id"]) or {}).get("kept")),
            "gt_rendered": sum(1 for r in recipes if (done["gt"].get(r["id"]) or {}).get("gt_image")),
            "kept": len(kept), "train": len(train_rows), "val": len(val_rows),
            "rl_prompts": len(held["rl"]), "eval": len(held["eval"]),
        }
        suff = [done["filters"][r]["sufficiency"] for r in by_id if r in done["filters"]
                and done["filters"][r].get("sufficiency") is not None]
        settings = self.settings()
        manifest = {
            "seed": self.cfg.seed,
            "counts": counts,
            "per_category": {k: dict(v) for k, v in sorted(per_category.items())},
            "per_split": {k: dict(v) for k, v in sorted(per_split.items())},
            "entities": {split: sorted({r["entity"] for r in recipes if r.get("split") == split and r.get("entity")})
                         for split in ("sft", "rl", "eval")},
            "rejections": dict(sorted(reasons.items())),
            "rejections_first": dict(sorted(first_reason.items())),
            "sufficiency_mean": round(sum(suff) / len(suff), 4) if suff else None,
            # Work time summed over recipes (threads overlap, so it can exceed elapsed_s).
            "stage_seconds": {s: round(sum(float(row.get("elapsed_s") or 0) for row in done[s].values()), 3)
                              for s in STAGES},
            "settings": {**self.cfg.identity(), "parallel": self.cfg.parallel, "offline": self._offline(),
                         "corpus_dir": settings.corpus_dir, "library_dir": settings.library_dir,
                         "max_rounds": settings.max_rounds, "max_references": settings.max_references},
            "files": {"recipes": "recipes.jsonl", "train": "train.jsonl", "val": "val.jsonl",
                      "rl_prompts": "rl_prompts.jsonl", "eval": "eval.jsonl",
                      "stages": [f"stages/{s}.jsonl" for s in STAGES]},
            "elapsed_s": round(elapsed_s, 3),
        }
        write_atomic(self.out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        return manifest

    @staticmethod
    def _bench_row(recipe: dict, done) -> dict:
        """A held-out recipe as a bench row, with what the teacher did on it (for the ablation)."""
        gt = done["gt"].get(recipe["id"]) or {}
        row = {"id": recipe["id"], "question": recipe["request"], "gt_image": gt.get("gt_image"),
               "eval_type": "text_image" if recipe.get("images") else "text", "category": recipe["category"],
               "difficulty": "medium", "track": recipe["track"], "images": list(recipe.get("images") or []),
               "entity": recipe.get("entity", ""), "split": recipe.get("split")}
        traj = (done["trajectories"].get(recipe["id"]) or {}).get("trajectory")
        if traj:
            from genevolve.trajectory import Trajectory

            teacher = Trajectory.from_dict(traj)
            row["teacher"] = {
                "skills": teacher.skills_used(), "tools": [s.tool_name for s in teacher.tool_calls()],
                "rounds": len(teacher.steps), "termination": traj.get("termination"), "program": traj.get("program")}
        return row

    def _val_ids(self, ids: list[str]) -> set[str]:
        frac = float(self.cfg.val_fraction)
        if frac <= 0 or len(ids) < 2:
            return set()
        ranked = sorted(ids, key=lambda i: stable_fraction(self.cfg.seed, "split:" + i))
        chosen = {i for i in ids if stable_fraction(self.cfg.seed, "split:" + i) < frac}
        if not chosen:  # a small build still gets a held-out record when one was asked for
            chosen = {ranked[0]}
        if len(chosen) == len(ids):
            chosen.discard(ranked[-1])
        return chosen


def build_dataset(out_dir: str | Path, config: BuildConfig | None = None, *, settings=None, resume: bool = False,
                  progress: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Build (or resume) a dataset into ``out_dir``; returns the manifest."""
    return DatasetBuilder(out_dir, config or BuildConfig(), settings=settings, resume=resume, progress=progress,
                          log=log).run()
