"""GenEvolve-Nano: the whole recipe on the real Gemma 3 270M, stage by stage, every stage resumable.

    genevolve train nano --out runs/nano [--stages data,sft,grpo,grpo_sdl,eval,external,ship]

Stages (each reads what the one before wrote under OUT, and each picks up where a kill left it):

==========  ==================================================================================
data        ``genevolve data build`` with the planner teacher in the compact nano conversation:
            sft / rl / eval splits, disjoint by request and named entity (OUT/data)
sft         LoRA SFT cold start on data/train.jsonl, held-out loss on data/val.jsonl (OUT/sft)
grpo        GRPO from the SFT adapter on data/rl_prompts.jsonl, hybrid reward (OUT/grpo)
grpo_sdl    the same plus self-distillation from Decision Guides (OUT/grpo_sdl)
eval        the ablation on a stratified subset of data/eval.jsonl: untuned base, SFT, SFT+GRPO,
            SFT+GRPO+SDL and the planner teacher, same tools, renderer and judges (OUT/eval)
external    program quality (``genevolve eval programs``) on prompt sets written by others: the
            same systems and the adapter shipped today, paired against it (OUT/external)
ship        the adapter that beat the shipped one on the external sets, with its model card;
            none of them did: the shipped adapter stays
==========  ==================================================================================

Configs come from ``configs/nano/{sft,grpo,grpo_sdl}.yaml``; the paths in them are replaced by
the ones under OUT. Wall time per stage is summed over every process that worked on it
(``OUT/stages.json``), so the model card states CPU hours even when a run spans interruptions.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from genevolve.config import ASSETS, REPO_ROOT

STAGES = ("data", "sft", "grpo", "grpo_sdl", "eval", "external", "ship")
CONFIGS = REPO_ROOT / "configs" / "nano"
# Half the recipes carry human variety (genevolve.data.variety): the first adapter, trained on templates
# alone, learned their shape and copied requests worded any other way.
# rl_pictures: without RL prompts about a picture, GRPO unlearned binding the user's own (4 of 11
# held-out requests, from the SFT adapter's 11); with 40, the same GRPO kept 11 of 11
# (docs/bench/programs.md, 2026-12-06).
DATA_RECIPE = {"recipes": 800, "seed": 0, "protocol": "nano", "budget_fraction": 0.2, "budget_rounds": 3,
               "held_out": True, "variety": 0.5, "rl_pictures": 40}
# SFT sees each conversation whose answer binds a picture (the user's own, or one image_search found)
# this many times: at 0.64 of an epoch of one copy each, the fresh SFT of 2026-12-07 saw about 30 of
# the 46 conversations that give the user's picture and bound it on 1 of 11 held-out requests; with
# two copies and 200 steps, 9 of 11 (docs/bench/programs.md, 2026-12-07).
SFT_PICTURE_BIND_COPIES = 2
EVAL_REQUESTS = 60
EVAL_MAX_NEW_TOKENS = 320  # per turn: a nano answer turn is about 220 tokens
UNTUNED_REQUESTS = 8
# The GRPO stages are measured on a stratified sample of the eval requests (every one of them also
# run by SFT), and reported against the stage before them on exactly those requests.
STAGE_REQUESTS = 20
PAIRS = (("sft", "untuned"), ("sft+grpo", "sft"), ("sft+grpo+sdl", "sft+grpo"), ("sft+grpo+sdl", "sft"))
LABELS = {"sft": "sft", "grpo": "sft+grpo", "grpo_sdl": "sft+grpo+sdl"}
# The external sets (PartiPrompts, GenEval, T2I-CompBench, the official examples): the same
# stratified sample as `genevolve eval programs --set all --limit 36`, so a run of the shipped adapter
# made by hand with that command is the same measurement.
EXTERNAL_REQUESTS = 36
EVAL_MAX_ROUNDS = 8  # the planner teacher needs up to 9 rounds on 1 in 60 eval requests; 8 caps a runaway base


class NanoRecipe:
    def __init__(self, out: str | Path, *, log: Callable[[str], None] = print, eval_requests: int = EVAL_REQUESTS,
                 ship_to: str | Path | None = None, eval_systems: list[str] | None = None, rescore: bool = False,
                 summary_only: bool = False, stage_requests: int = STAGE_REQUESTS, fork_at: int | None = None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.eval_requests = eval_requests
        self.ship_to = Path(ship_to) if ship_to else ASSETS / "adapters" / "nano"
        self.eval_systems = eval_systems  # None: every system that exists; a subset never marks eval done
        self.rescore = rescore  # measure stored rollouts again (after a judge changed) instead of skipping
        self.summary_only = summary_only  # eval: write the summary of the rows so far, run nothing
        self.stage_requests = stage_requests  # GRPO stages: a stratified sample of the eval requests
        self.fork_at = fork_at  # plain GRPO starts from GRPO+SDL's checkpoint at this step (paired SDL effect)

    # ------------------------------------------------------------ bookkeeping

    def _ledger(self) -> dict:
        path = self.out / "stages.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def _write_ledger(self, ledger: dict) -> None:
        from genevolve.durable import write_atomic

        write_atomic(self.out / "stages.json", json.dumps(ledger, indent=2) + "\n")

    @contextmanager
    def _timed(self, stage: str):
        """Adds this process's wall time to the stage's total, also when the stage is interrupted."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            ledger = self._ledger()
            entry = ledger.setdefault(stage, {"wall_s": 0.0, "sessions": 0})
            entry["wall_s"] = round(entry["wall_s"] + time.perf_counter() - t0, 1)
            entry["sessions"] += 1
            self._write_ledger(ledger)

    def _mark_done(self, stage: str, **info) -> None:
        ledger = self._ledger()
        ledger.setdefault(stage, {"wall_s": 0.0, "sessions": 0}).update({"done": True, **info})
        self._write_ledger(ledger)

    def done(self, stage: str) -> bool:
        return bool(self._ledger().get(stage, {}).get("done"))

    def run(self, stages: list[str] | None = None) -> dict:
        for stage in stages or list(STAGES):
            if stage not in STAGES:
                raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
            # ship takes a second and follows the latest evaluation, so it runs again whenever asked;
            # external measures each system in its own resumable folder, so asking again adds the
            # adapters trained since (a GRPO stage that finished later) and skips what is measured.
            if (self.done(stage) and stage not in ("ship", "external")
                    and not (stage == "eval" and (self.rescore or self.summary_only))):
                self.log(f"[nano] {stage}: done already")
                continue
            self.log(f"[nano] {stage}: starting")
            try:
                with self._timed(stage):
                    getattr(self, f"stage_{stage}")()
            except StoppedBySignal as stop:
                # A stop request ends the recipe, not just the stage: the next stage would start a
                # new trainer with a fresh stop flag, and the process would go on training.
                self.log(f"[nano] {stop}; run the same command to go on from its last checkpoint")
                break
        return self._ledger()

    # ------------------------------------------------------------ stages

    def stage_data(self) -> None:
        from genevolve.data.pipeline import BuildConfig, DatasetBuilder

        out = self.out / "data"
        cfg = BuildConfig(teacher="planner", renderer="layout", offline=True, **DATA_RECIPE)
        manifest = DatasetBuilder(out, cfg, resume=True, progress=False, log=self.log).run()
        self._mark_done("data", counts=manifest["counts"])

    def _config(self, kind: str, name: str, **paths):
        from genevolve.training.config import config_from_file

        if kind == "sft":
            from genevolve.training.sft import SFTConfig as cls
        else:
            from genevolve.training.grpo import GRPOConfig as cls
        cfg = config_from_file(cls, CONFIGS / f"{name}.yaml", run_dir=str(self.out / name), **paths)
        return cfg

    def sft_adapter(self) -> Path:
        """The SFT checkpoint with the lowest held-out loss (``checkpoints/best`` names it)."""
        root = self.out / "sft" / "checkpoints"
        marker = root / "best" if (root / "best").is_file() else root / "latest"
        name = marker.read_text(encoding="utf-8").strip() if marker.is_file() else "missing"
        return root / name

    def stage_sft(self) -> None:
        from genevolve.training.sft import train_sft

        data = self.out / "data"
        train = [str(data / "train.jsonl")]
        binds = self.out / "sft" / "picture_binds.jsonl"
        if write_picture_binds(data / "train.jsonl", binds, copies=SFT_PICTURE_BIND_COPIES - 1):
            train.append(str(binds))
        result = train_sft(self._config("sft", "sft", train_data=train, eval_data=str(data / "val.jsonl")))
        StoppedBySignal.check("sft", result)
        if result["state"] == "done":
            self._mark_done("sft", best_eval_loss=result["best_eval_loss"], steps=result["step"])

    def _grpo(self, name: str) -> None:
        from genevolve.training.grpo import train_grpo

        cfg = self._grpo_config(name)
        if name == "grpo" and self.fork_at:
            shared = self._shared_steps(self.fork_at)
            if shared is None:  # stopped on the way there (a signal); the same command goes on
                return
            cfg.fork_from = str(shared)
        result = train_grpo(cfg)
        StoppedBySignal.check(name, result)
        if result.get("state") == "done":
            self._mark_done(name, steps=result.get("step"))

    def _grpo_config(self, name: str):
        cfg = self._config("grpo", name, prompts=str(self.out / "data" / "rl_prompts.jsonl"))
        cfg.model.init_adapter = str(self.sft_adapter())
        if cfg.sdl.enabled:
            cfg.sdl.store_path = str(self.out / name / "guides.db")
        return cfg

    def _shared_steps(self, step: int) -> Path | None:
        """GRPO+SDL's checkpoint at ``step``, training that stage up to it first when needed (None
        when that training was stopped before the step).

        Plain GRPO forks from it (``GRPOConfig.fork_from``): SDL's gate cannot open before a
        prompt's second visit, so the two runs share their first steps and then differ by SDL
        alone. The steps trained here count towards the grpo stage's wall time."""
        from genevolve.training.grpo import train_grpo
        from genevolve.training.metrics import RunFiles

        ckpt = self.out / "grpo_sdl" / "checkpoints" / f"checkpoint-{step}"
        if RunFiles(self.out / "grpo", create=False).latest_trl_checkpoint() is not None:
            return ckpt  # forked on an earlier start; the run resumes from its own checkpoint
        if not (ckpt / "trainer_state.json").is_file():
            latest = RunFiles(self.out / "grpo_sdl", create=False).latest_trl_checkpoint()
            reached = int(latest.name.split("-")[-1]) if latest is not None else 0
            if reached >= step:
                raise ValueError(f"--fork-at {step}: grpo_sdl is at step {reached} and no longer keeps "
                                 f"checkpoint-{step}; fork at a step it keeps, or delete {self.out / 'grpo_sdl'} "
                                 f"to train it again")
            self.log(f"[nano] grpo: training grpo_sdl to step {step} first, to fork plain GRPO from it")
            sdl_cfg = self._grpo_config("grpo_sdl")
            sdl_cfg.stop_after = step - reached
            result = train_grpo(sdl_cfg)
            StoppedBySignal.check("grpo_sdl", result)
            if result.get("step") != step:
                self.log(f"[nano] grpo: grpo_sdl stopped at step {result.get('step')}; run the same command "
                         f"to go on to step {step} and the fork")
                return None
        return ckpt

    def stage_grpo(self) -> None:
        self._grpo("grpo")

    def stage_grpo_sdl(self) -> None:
        self._grpo("grpo_sdl")

    def adapters(self) -> dict[str, Path]:
        """The trained adapters that exist, by system name."""
        found = {"sft": self.sft_adapter()}
        for name in ("grpo", "grpo_sdl"):
            latest = self.out / name / "checkpoints" / "latest"
            if latest.exists():  # TRL's checkpoints hold the adapter at their top level
                found[name] = self.out / name / "checkpoints" / latest.read_text().strip()
        return {k: v for k, v in found.items() if (v / "adapter_config.json").is_file()}

    def stage_eval(self) -> None:
        from genevolve.bench.ablation import (AblationRunner, System, chart, markdown_table, paired, paired_table,
                                              stratified_subset, summarise)
        from genevolve.durable import read_jsonl, write_atomic
        from genevolve.policies.local import LocalPolicy
        from genevolve.policies.planner import PlannerPolicy

        cases = stratified_subset(read_jsonl(self.out / "data" / "eval.jsonl"), self.eval_requests)
        tokenizer = _gemma_tokenizer()
        runner = AblationRunner(cases, self.out / "eval", count_tokens=lambda t: len(tokenizer(t)["input_ids"]),
                                log=self.log, max_rounds=EVAL_MAX_ROUNDS, max_tool_calls=EVAL_MAX_ROUNDS - 1)

        def nano(adapter):
            return lambda: LocalPolicy.nano(adapter=adapter, max_new_tokens=EVAL_MAX_NEW_TOKENS)

        # The untuned base rarely ends a turn on its own, and what it copies from the prompt can pass
        # for a tool call, so a request costs up to EVAL_MAX_ROUNDS full capped turns (minutes on
        # this CPU): it is measured on a subset, and the summary says how many requests each row covers.
        systems = [System("planner", PlannerPolicy),
                   System("untuned", nano("none"), limit=min(UNTUNED_REQUESTS, len(cases)))]
        systems += [System(LABELS[k], nano(str(v)), sample=None if k == "sft" else self.stage_requests)
                    for k, v in self.adapters().items()]
        chosen = systems
        if self.eval_systems is not None:
            wanted = self._asked_systems([s.name for s in systems])
            chosen = [s for s in systems if s.name in wanted]
        if not self.summary_only:
            for s in chosen:
                if self.rescore and runner.rows(s.name):
                    runner.rescore(s.name)
                runner.run(s)
        rows = {s.name: found for s in systems if (found := runner.rows(s.name))}
        if rows:
            # SFT again on just the GRPO stages' sample, beside them, so the table and chart
            # compare like with like (the paired table below gives the per-request difference).
            sample_ids = {c["id"] for c in stratified_subset(cases, self.stage_requests)}
            if "sft" in rows and any(LABELS[k] in rows for k in ("grpo", "grpo_sdl")):
                same = [r for r in rows["sft"] if r["id"] in sample_ids]
                rows[f"sft (same {len(same)})"] = same
                rows = {k: rows[k] for k in sorted(rows, key=_system_rank)}
            summary = summarise(rows)
            write_atomic(self.out / "eval" / "summary.json", json.dumps(summary, indent=2) + "\n")
            write_atomic(self.out / "eval" / "summary.md", markdown_table(summary) + "\n")
            chart(summary, self.out / "eval" / "ablation.png")
            self.log(markdown_table(summary))
            pairs = [p for p in (paired(rows, a, b) for a, b in PAIRS) if p]
            write_atomic(self.out / "eval" / "paired.json", json.dumps(pairs, indent=2) + "\n")
            write_atomic(self.out / "eval" / "paired.md", paired_table(pairs) + "\n")
            if pairs:
                self.log(paired_table(pairs))
        complete = all(len(runner.rows(s.name)) == len(runner.cases_of(s)) for s in systems)
        if complete:
            self._mark_done("eval", systems=[s.name for s in systems], requests=len(cases))
        else:
            self.log("[nano] eval: the summary covers the requests finished so far; run the stage again to go on")

    def stage_external(self) -> None:
        from genevolve.bench.ablation import stratified_subset
        from genevolve.bench.eval_sets import load_eval_set
        from genevolve.bench.programs import run_program_eval
        from genevolve.durable import read_jsonl

        root = self.out / "external"
        root.mkdir(parents=True, exist_ok=True)
        self._pin_shipped(root)
        cases = stratified_subset(load_eval_set("all"), EXTERNAL_REQUESTS)
        systems = {"planner": ("planner", cases), "shipped": ("nano", cases),
                   "untuned": ("nano?adapter=none", stratified_subset(cases, min(UNTUNED_REQUESTS, len(cases))))}
        systems.update({LABELS[k]: (f"nano?adapter={v}", cases) for k, v in self.adapters().items()})
        if self.eval_systems is not None:
            wanted = self._asked_systems(list(systems))
            systems = {k: v for k, v in systems.items() if k in wanted or k == "shipped"}
        runs = [(name, spec, chosen, root / _slug(name), "all", "") for name, (spec, chosen) in systems.items()]
        # The public sets give no pictures, so binding the user's own pictures is measured on the
        # held-out split's requests that give them (our own templates: a guard, not a headline).
        pictured = [c for c in read_jsonl(self.out / "data" / "eval.jsonl") if c.get("images")]
        if pictured:
            runs += [(name, spec, pictured, self.out / USER_PICTURES / _slug(name), "held-out user pictures",
                      " of the held-out split that give pictures") for name, (spec, _) in systems.items()]
        for name, spec, chosen, folder, set_name, which in runs:
            if self.summary_only:
                break
            self.log(f"[nano] external: {name} ({spec}) on {len(chosen)} requests{which}")
            run_program_eval([dict(c) for c in chosen], folder, policy=spec, set_name=set_name,
                             resume=(folder / "run.json").exists(), progress=False, log=self.log)
        pairs = self.external_pairs()
        if pairs is not None and all((run[3] / "rollout.jsonl").exists() for run in runs):
            self._mark_done("external", systems=list(systems), requests=len(cases), pictured=len(pictured))

    def _asked_systems(self, have: list[str]) -> set[str]:
        """The systems ``--systems`` names, a stage's name standing for its row (grpo_sdl for
        sft+grpo+sdl); a name that matches nothing is an error, not a run that measures nothing."""
        wanted = {LABELS.get(name, name) for name in self.eval_systems}
        unknown = wanted - set(have)
        if unknown:
            raise ValueError(f"no such system to evaluate: {', '.join(sorted(unknown))} (have: {', '.join(have)}; "
                             "a stage's name works too: sft, grpo, grpo_sdl)")
        return wanted

    def _pin_shipped(self, root: Path) -> None:
        """The 'shipped' row is the adapter in the assets when this stage first ran; a later ship
        replaces that adapter, so a resumed stage must refuse to mix the two in one row."""
        import hashlib

        weights = self.ship_to / "adapter_model.safetensors"
        digest = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None
        pin = root / "shipped.json"
        if pin.exists():
            pinned = json.loads(pin.read_text(encoding="utf-8"))["adapter_model_sha256"]
            if pinned != digest:
                raise RuntimeError(f"the shipped adapter changed since {root} was started; move that folder "
                                   "away to measure the new one")
        else:
            pin.write_text(json.dumps({"adapter_model_sha256": digest}) + "\n", encoding="utf-8")

    def external_pairs(self) -> list[dict] | None:
        """Every system against the shipped adapter, paired per metric on the requests both ran;
        written to OUT/external/paired.{json,md} with a one-row-per-system summary."""
        from genevolve.bench.ablation import paired_table
        from genevolve.bench.programs import TABLE_HEAD, _row_cells, compare, summarise
        from genevolve.durable import write_atomic

        root = self.out / "external"
        runs = {p.name: p for p in sorted(root.iterdir()) if (p / "rollout.jsonl").is_file()} if root.is_dir() else {}
        if "shipped" not in runs:
            return None
        rows, pairs = [], []
        for name in sorted(runs, key=_system_rank):
            summary = summarise(runs[name])
            rows.append(_row_cells(name, summary["overall"]))
            if name != "shipped":
                for c in compare(runs[name], runs["shipped"]):
                    pairs.append({**c, "system": name, "baseline": "shipped"})
        pictured = self.out / USER_PICTURES
        if (pictured / "shipped" / "rollout.jsonl").is_file():
            for run in sorted(pictured.iterdir(), key=lambda p: _system_rank(p.name)):
                if run.name != "shipped" and (run / "rollout.jsonl").is_file():
                    pairs += [{**c, "system": run.name, "baseline": "shipped", "set": "held-out user pictures"}
                              for c in compare(run, pictured / "shipped") if c["metric"] == PICTURE_GUARD]
        write_atomic(root / "summary.md", TABLE_HEAD.format(first="system") + "\n" + "\n".join(rows) + "\n")
        write_atomic(root / "paired.json", json.dumps(pairs, indent=2) + "\n")
        header = "| metric | system | against | requests | system | against | difference [95% CI] | higher / same / lower |"
        write_atomic(root / "paired.md", paired_table(pairs, header=header, label="metric") + "\n")
        return pairs

    def model_card(self, shipped: str) -> str:
        from genevolve.nano.report import model_card

        return model_card(self.out, shipped)

    def stage_ship(self) -> None:
        """Copy the chosen adapter into the assets: the trained stage that passes ``ship_choice``
        against the shipped adapter (the largest difference wins); when none does, the shipped
        adapter stays and nothing is written."""
        adapters = self.adapters()
        if not adapters:
            raise FileNotFoundError(f"no trained adapter under {self.out}: run the sft stage first")
        pairs = _read_json(self.out / "external" / "paired.json")
        if pairs is None:
            raise FileNotFoundError(f"no external comparison under {self.out}: run the external stage first")
        choice = ship_choice(pairs, adapters)
        if choice is None:
            self._mark_done("ship", shipped="kept")
            self.log("[nano] ship: no trained stage passed the ship rule against the shipped adapter (more clean "
                     "programs that are not copies of the request on the external sets, no more copies, the "
                     f"user's pictures bound as often); it stays. The comparisons: {self.out / 'external' / 'paired.md'}")
            return
        src = adapters[choice]
        dest = self.ship_to
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(src / name, dest / name)
        (dest / "SOURCE.json").write_text(json.dumps(adapter_source(choice, src, self.out), indent=2) + "\n",
                                          encoding="utf-8")
        (dest / "README.md").write_text(self.model_card(choice), encoding="utf-8")
        self._mark_done("ship", shipped=choice, to=str(dest))
        self.log(f"[nano] shipped the {choice} adapter to {dest}; python scripts/nano_docs.py {self.out} "
                 "rewrites docs/nano.md and its charts from this run")


def write_picture_binds(train: Path, out: Path, *, copies: int) -> int:
    """Write ``copies`` more copies of each SFT record of ``train`` whose answer binds a picture to
    ``out`` (image paths made absolute, as ``out`` lives elsewhere); returns how many records it wrote.

    Binding is one decision in the last turn of a tenth of the conversations, so one pass at the
    recipe's 0.64 of an epoch left the student choosing "0 reference image(s)" on held-out requests that
    give a picture. The same records each time: the file is rewritten identically on a resume."""
    from genevolve.durable import read_jsonl
    from genevolve.program import Program, ProgramError
    from genevolve.protocol import parse_turn

    rows = []
    for row in read_jsonl(train) if copies > 0 else ():
        last = next((m for m in reversed(row.get("messages", [])) if m.get("role") == "assistant"), None)
        answer = parse_turn(last["content"]).answer if last and isinstance(last.get("content"), str) else None
        try:
            binds = answer is not None and bool(Program.from_answer(answer).reference_images)
        except ProgramError:
            binds = False
        if binds:
            images = [i if Path(i).is_absolute() else str((train.parent / i).resolve()) for i in row.get("images", [])]
            rows.extend([{**row, "images": images}] * copies)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


class StoppedBySignal(Exception):
    """A stage's trainer was stopped by SIGTERM/SIGINT (after saving its step)."""

    @classmethod
    def check(cls, stage: str, result: dict) -> None:
        if result.get("signalled"):
            raise cls(f"{stage} stopped at step {result.get('step')} on a stop request")


def adapter_source(stage: str, checkpoint: Path, run_dir: Path) -> dict:
    """Where a shipped adapter came from, in terms that hold on any machine: the stage, its
    checkpoint relative to the run folder (run folders are not in the repository), the command
    that makes such a run, and the weights' hash so a copy can be checked against it."""
    import hashlib

    try:
        rel = checkpoint.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        rel = checkpoint.name
    digest = hashlib.sha256((checkpoint / "adapter_model.safetensors").read_bytes()).hexdigest()
    return {"stage": stage, "checkpoint_in_run": rel, "recipe": "genevolve train nano --out RUN_DIR",
            "adapter_model_sha256": digest}


def _system_rank(name: str) -> int:
    """Table order: the teacher, the untuned base, then the stages in training order."""
    if name.startswith("sft (same"):
        return 3
    order = ["planner", "shipped", "untuned", "sft", None, "sft+grpo", "sft+grpo+sdl"]
    return order.index(name) if name in order else len(order)


SHIP_METRIC = "clean_not_copied"
# A program that is the request and the quality line is clean by construction: an adapter that
# learned to answer at once (GRPO on a reward that paid a copy) read 97% clean against the shipped
# adapter's 83% on the external sets, an interval above zero, while copying 34 of the 36 requests.
# And the adapter shipped on 2026-12-06 reads 35 or 36 of 36 clean while copying half of them, so
# no candidate could show more clean programs than it: the rule counts the clean programs that are
# more than the request as written. A candidate also copies no more often than the shipped adapter,
# on average: an interval test ("not shown to copy more") let an adapter through that copied 14
# points more (53% against 39%, interval [-0.08, +0.36]), and the copies are what the method exists to end.
SHIP_GUARD = "copied"
# The public sets give no pictures, and a GRPO adapter that won there bound the user's own picture
# on 4 of 11 held-out requests where the shipped adapter bound 8 (paired interval [-0.727, +0.000]).
# The user's picture is what such a request is about, and no headline set can show its loss, so a
# candidate ships only if it binds them at least as often as the shipped adapter, on average.
PICTURE_GUARD = "user_pictures_bound"
USER_PICTURES = "user-pictures"  # OUT/user-pictures/<system>: the held-out requests that give pictures


def ship_choice(pairs: list[dict], adapters) -> str | None:
    """The stage to ship from the external comparisons against the shipped adapter (rows of
    ``programs.compare`` labelled system/baseline), or None when none is better with an interval
    above zero. Better means a larger share of clean programs that are more than the request as
    written (``SHIP_METRIC``), no more copies of the request and the user's own pictures bound at
    least as often on the held-out requests that give them (both on average, paired on the same
    requests); a tie goes to the earlier stage."""
    stages = list(LABELS)

    def row(label: str, metric: str) -> dict | None:
        return next((p for p in pairs if p["system"] == _slug(label) and p["baseline"] == "shipped"
                     and p.get("metric") == metric), None)

    better = []
    for k, label in LABELS.items():
        clean, guard, pictures = row(label, SHIP_METRIC), row(label, SHIP_GUARD), row(label, PICTURE_GUARD)
        if k in adapters and clean is not None and clean["delta_ci95"][0] > 0 \
                and (guard is None or guard["delta"] <= 0) \
                and (pictures is None or pictures["delta"] >= 0):
            better.append((clean["delta"], -stages.index(k), k))
    return max(better)[2] if better else None


def _slug(system: str) -> str:
    """A system's folder name under OUT/external ('sft+grpo' stays readable on every filesystem)."""
    return system.replace(" ", "-")


def _gemma_tokenizer():
    from transformers import AutoTokenizer

    from genevolve.training.modeling import gemma3_270m_hf

    return AutoTokenizer.from_pretrained(str(gemma3_270m_hf()))


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
