"""GenEvolve-Nano: the whole recipe on the real Gemma 3 270M, stage by stage, every stage resumable.

    genevolve train nano --out runs/nano [--stages data,sft,grpo,grpo_sdl,eval,ship]

Stages (each reads what the one before wrote under OUT, and each picks up where a kill left it):

==========  ==================================================================================
data        ``genevolve data build`` with the planner teacher in the compact nano conversation:
            sft / rl / eval splits, disjoint by request and named entity (OUT/data)
sft         LoRA SFT cold start on data/train.jsonl, held-out loss on data/val.jsonl (OUT/sft)
grpo        GRPO from the SFT adapter on data/rl_prompts.jsonl, hybrid reward (OUT/grpo)
grpo_sdl    the same plus self-distillation from Decision Guides (OUT/grpo_sdl)
eval        the ablation on a stratified subset of data/eval.jsonl: untuned base, SFT, SFT+GRPO,
            SFT+GRPO+SDL and the planner teacher, same tools, renderer and judges (OUT/eval)
ship        the chosen adapter into assets/adapters/nano with its model card
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

STAGES = ("data", "sft", "grpo", "grpo_sdl", "eval", "ship")
CONFIGS = REPO_ROOT / "configs" / "nano"
DATA_RECIPE = {"recipes": 560, "seed": 0, "protocol": "nano", "budget_fraction": 0.2, "budget_rounds": 3,
               "held_out": True}
EVAL_REQUESTS = 60
EVAL_MAX_NEW_TOKENS = 320  # per turn: a nano answer turn is about 220 tokens
UNTUNED_REQUESTS = 8
# The GRPO stages are measured on a stratified sample of the eval requests (every one of them also
# run by SFT), and reported against the stage before them on exactly those requests.
STAGE_REQUESTS = 20
PAIRS = (("sft", "untuned"), ("sft+grpo", "sft"), ("sft+grpo+sdl", "sft+grpo"), ("sft+grpo+sdl", "sft"))
LABELS = {"sft": "sft", "grpo": "sft+grpo", "grpo_sdl": "sft+grpo+sdl"}
EVAL_MAX_ROUNDS = 8  # the planner teacher needs up to 9 rounds on 1 in 60 eval requests; 8 caps a runaway base


class NanoRecipe:
    def __init__(self, out: str | Path, *, log: Callable[[str], None] = print, eval_requests: int = EVAL_REQUESTS,
                 ship_to: str | Path | None = None, eval_systems: list[str] | None = None, rescore: bool = False,
                 summary_only: bool = False, stage_requests: int = STAGE_REQUESTS):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.eval_requests = eval_requests
        self.ship_to = Path(ship_to) if ship_to else ASSETS / "adapters" / "nano"
        self.eval_systems = eval_systems  # None: every system that exists; a subset never marks eval done
        self.rescore = rescore  # measure stored rollouts again (after a judge changed) instead of skipping
        self.summary_only = summary_only  # eval: write the summary of the rows so far, run nothing
        self.stage_requests = stage_requests  # GRPO stages: a stratified sample of the eval requests

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
            # ship takes a second and follows the latest evaluation, so it runs again whenever asked.
            if self.done(stage) and stage != "ship" and not (stage == "eval" and (self.rescore or self.summary_only)):
                self.log(f"[nano] {stage}: done already")
                continue
            self.log(f"[nano] {stage}: starting")
            with self._timed(stage):
                getattr(self, f"stage_{stage}")()
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
        result = train_sft(self._config("sft", "sft", train_data=str(data / "train.jsonl"),
                                        eval_data=str(data / "val.jsonl")))
        if result["state"] == "done":
            self._mark_done("sft", best_eval_loss=result["best_eval_loss"], steps=result["step"])

    def _grpo(self, name: str) -> None:
        from genevolve.training.grpo import train_grpo

        cfg = self._config("grpo", name, prompts=str(self.out / "data" / "rl_prompts.jsonl"))
        cfg.model.init_adapter = str(self.sft_adapter())
        if cfg.sdl.enabled:
            cfg.sdl.store_path = str(self.out / name / "guides.db")
        result = train_grpo(cfg)
        if result.get("state") == "done":
            self._mark_done(name, steps=result.get("step"))

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
            unknown = set(self.eval_systems) - {s.name for s in systems}
            if unknown:
                raise ValueError(f"no such system to evaluate: {', '.join(sorted(unknown))} (have: "
                                 f"{', '.join(s.name for s in systems)})")
            chosen = [s for s in systems if s.name in self.eval_systems]
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

    def model_card(self, shipped: str) -> str:
        from genevolve.training.nano_card import render_card

        return render_card(model_card_sections(self.out, shipped))

    def write_docs(self, shipped: str, docs: Path = REPO_ROOT / "docs") -> None:
        """docs/nano.md and its chart, from the same run folder as the model card."""
        from genevolve.training.nano_card import render_docs

        (docs / "nano.md").write_text(render_docs(model_card_sections(self.out, shipped)), encoding="utf-8")
        chart = self.out / "eval" / "ablation.png"
        if chart.exists():
            (docs / "images").mkdir(parents=True, exist_ok=True)
            shutil.copy2(chart, docs / "images" / "nano_ablation.png")
        grpo_chart(self.out, docs / "images" / "nano_grpo.png")

    def stage_ship(self) -> None:
        """Copy the chosen adapter into the assets: SFT, unless a later stage beat it on the same
        requests with a paired interval above zero (then the one with the larger difference)."""
        adapters = self.adapters()
        choice = ship_choice(_read_json(self.out / "eval" / "paired.json") or [], adapters)
        src = adapters.get(choice)
        if src is None:
            raise FileNotFoundError(f"no trained adapter under {self.out}: run the sft stage first")
        dest = self.ship_to
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(src / name, dest / name)
        (dest / "SOURCE.json").write_text(json.dumps(adapter_source(choice, src, self.out), indent=2) + "\n",
                                          encoding="utf-8")
        (dest / "README.md").write_text(self.model_card(choice), encoding="utf-8")
        if self.ship_to == ASSETS / "adapters" / "nano":  # the repository's own docs follow the shipped adapter
            self.write_docs(choice)
        self._mark_done("ship", shipped=choice, to=str(dest))
        self.log(f"[nano] shipped the {choice} adapter to {dest}")


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


def grpo_rows(out: Path) -> dict[str, list[dict]]:
    """The optimizer-step rows of each GRPO stage's metrics.jsonl, by stage name."""
    from genevolve.training.metrics import read_metrics

    rows = {}
    for name in ("grpo", "grpo_sdl"):
        if (out / name / "metrics.jsonl").exists():
            steps = [m for m in read_metrics(out / name) if m.get("reward_mean") is not None]
            if steps:
                rows[name] = steps
    return rows


def grpo_section(out: Path) -> str | None:
    """Per step of each GRPO stage: the group's reward and its spread, what the rollouts did, the SDL
    terms; the measured parts of the model card's reinforcement section."""
    stages = grpo_rows(out)
    if not stages:
        return None
    lines = ["| stage | step | reward mean ± sd in the group | ended in a program | skill calls | rows trained | "
             "SDL KL | guides added / gate hits | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for name, steps in stages.items():
        for m in steps:
            terms = m.get("terminations") or {}
            n = sum(terms.values()) or 1
            answered = terms.get("answer", 0) + terms.get("forced_answer", 0)
            skills = (m.get("tool_counts") or {}).get("query_knowledge", 0)
            kl = "–" if m.get("sdl_kl") is None else f"{m['sdl_kl']:.4f}"
            guides = "–" if "guides_added" not in m else f"{m['guides_added']} / {m.get('guide_hit_rate', 0):.0%}"
            secs = sum((m.get("timings") or {}).get(k, 0.0) for k in ("generation_s", "tools_s", "judge_s"))
            lines.append(f"| {name} | {m['step']} | {m['reward_mean']:.3f} ± {m.get('reward_std') or 0:.3f} | "
                         f"{answered}/{n} | {skills} | {m.get('trained_samples', '–')} | {kl} | {guides} | "
                         f"{m.get('step_time', secs) or secs:.0f} |")
    return "\n".join(lines)


def grpo_chart(out: Path, path: Path) -> Path | None:
    """Reward per step (mean and the group's spread) for each GRPO stage."""
    stages = grpo_rows(out)
    if not stages:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4), constrained_layout=True)
    for name, steps in stages.items():
        x = [m["step"] for m in steps]
        y = [m["reward_mean"] for m in steps]
        sd = [m.get("reward_std") or 0.0 for m in steps]
        ax.plot(x, y, marker="o", label=name.replace("_", "+"))
        ax.fill_between(x, [a - b for a, b in zip(y, sd)], [a + b for a, b in zip(y, sd)], alpha=0.15)
    ax.set_xlabel("optimizer step (one prompt, 6 rollouts)")
    ax.set_ylabel("hybrid reward")
    ax.set_ylim(0, 1)
    ax.set_title("GRPO on the RL pool: group mean ± sd", fontsize=10)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _system_rank(name: str) -> int:
    """Table order: the teacher, the untuned base, then the stages in training order."""
    if name.startswith("sft (same"):
        return 3
    order = ["planner", "untuned", "sft", None, "sft+grpo", "sft+grpo+sdl"]
    return order.index(name) if name in order else len(order)


def ship_choice(pairs: list[dict], adapters) -> str:
    """The stage to ship from the paired comparisons against SFT (``ablation.paired`` rows)."""
    stages = list(LABELS)
    against_sft = [(p["delta"], -stages.index(k), k) for k, label in LABELS.items() if k != "sft" and k in adapters
                   for p in pairs if p["system"] == label and p["baseline"] == "sft" and p["delta_ci95"][0] > 0]
    return max(against_sft)[2] if against_sft else "sft"  # a tie goes to the earlier, simpler stage


def _gemma_tokenizer():
    from transformers import AutoTokenizer

    from genevolve.training.modeling import gemma3_270m_hf

    return AutoTokenizer.from_pretrained(str(gemma3_270m_hf()))


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _hours(seconds: float | None) -> str:
    return "–" if not seconds else f"{seconds / 3600:.2f} h"


def model_card_sections(out: Path, shipped: str) -> dict[str, str]:
    """The measured parts of the model card, from the run folder (nothing here is typed by hand)."""
    from genevolve.training.metrics import read_metrics

    sections: dict[str, str] = {}
    manifest = _read_json(out / "data" / "manifest.json") or {}
    c = manifest.get("counts") or {}
    if c:
        lines = [f"{c['recipes']} recipes → {c['answered']} answered by the planner teacher → "
                 f"{c['filter_passed']} passed the filters → {c['kept']} kept for SFT "
                 f"({c['train']} train / {c['val']} val); {c.get('rl_prompts', 0)} RL prompts; "
                 f"{c.get('eval', 0)} held-out eval requests.", "",
                 "| split | recipes | kept | named entities |", "|---|---|---|---|"]
        for split, v in sorted((manifest.get("per_split") or {}).items()):
            ents = ", ".join((manifest.get("entities") or {}).get(split, [])) or "–"
            lines.append(f"| {split} | {v.get('recipes', 0)} | {v.get('kept', 0)} | {ents} |")
        rej = manifest.get("rejections_first") or {}
        lines += ["", "Rejections (first reason): " + (", ".join(f"{k} {v}" for k, v in rej.items()) or "none") + "."]
        sections["data"] = "\n".join(lines)
    metrics = read_metrics(out / "sft") if (out / "sft" / "metrics.jsonl").exists() else []
    # Wall time per stage from what each stage recorded itself (so a stage run outside
    # `train nano` counts too): the build's elapsed time, the SFT log's first to last step, the
    # seconds of every evaluated request.
    rows = ["| stage | wall time | measured from |", "|---|---|---|"]
    if manifest.get("elapsed_s"):
        rows.append(f"| data | {_hours(manifest['elapsed_s'])} | data/manifest.json |")
    steps = [m for m in metrics if "step_s" in m and "time" in m]
    if steps:
        span = steps[-1]["time"] - steps[0]["time"] + steps[0]["step_s"]
        rows.append(f"| sft | {_hours(span)} | sft/metrics.jsonl ({len(steps)} steps, held-out evals included) |")
    for name in ("grpo", "grpo_sdl"):
        grpo = read_metrics(out / name) if (out / name / "metrics.jsonl").exists() else []
        timed = [m for m in grpo if "time" in m]
        if len(timed) > 1:
            rows.append(f"| {name} | {_hours(timed[-1]['time'] - timed[0]['time'])} | {name}/metrics.jsonl |")
    eval_dir = out / "eval"
    for path in sorted(eval_dir.glob("*.jsonl")) if eval_dir.exists() else []:
        secs = [float(json.loads(x).get("seconds") or 0) for x in path.read_text(encoding="utf-8").splitlines()
                if x.strip()]
        rows.append(f"| eval: {path.stem} | {_hours(sum(secs))} | eval/{path.name} ({len(secs)} requests) |")
    if len(rows) > 2:
        sections["time"] = "\n".join(rows)
    evals = [m for m in metrics if m.get("eval_loss") is not None]
    if metrics:
        steps = [m for m in metrics if "step_s" in m]
        sections["sft"] = (f"{len(steps)} optimizer steps, {sum(m['tokens'] for m in steps):,} trained tokens, "
                           f"{sum(m['step_s'] for m in steps) / 3600:.2f} h of steps; training loss "
                           f"{steps[0]['loss']:.3f} (step 1) → {steps[-1]['loss']:.3f} (step {steps[-1]['step']}); "
                           "held-out loss " + ", ".join(f"{m['eval_loss']:.3f} (step {m['step']})" for m in evals) + ".")
    summary = out / "eval" / "summary.md"
    if summary.exists():
        sections["ablation"] = summary.read_text(encoding="utf-8").strip()
    paired = out / "eval" / "paired.md"
    if paired.exists() and paired.read_text(encoding="utf-8").count("\n") > 2:
        sections["paired"] = paired.read_text(encoding="utf-8").strip()
    rl = grpo_section(out)
    if rl:
        sections["grpo"] = rl
    untuned = out / "eval" / "untuned.jsonl"
    if untuned.exists():
        sections["untuned_n"] = str(sum(1 for x in untuned.read_text(encoding="utf-8").splitlines() if x.strip()))
    sweep = _read_json(out / "recipe_sweep.json")
    if sweep:
        lines = ["| variant | s/step | trained tokens/s | held-out loss after the steps | run |", "|---|---|---|---|---|"]
        # A second run with the variants in another order (recipe_sweep_*.json) shows that the first
        # variant's one-time start-up costs do not decide the speed column.
        for path in [out / "recipe_sweep.json", *sorted(out.glob("recipe_sweep_*.json"))]:
            rows = _read_json(path) or []
            lines += [f"| {r['variant']} | {r['s_per_step']} | {r['tokens_per_s']} | {r['eval_loss']} | {path.name} |"
                      for r in rows]
        first = sweep[0]
        evals = f" --eval-records {first['eval_records']}" if "eval_records" in first else ""
        sections["recipe"] = "\n".join([f"Measured by `python benchmarks/nano_sft_recipe.py --data runs/nano/data --steps "
                                        f"{first['steps']}{evals} [--variants …]` (same records, same order, same "
                                        "held-out records; batch 1):", "", *lines])
    else:
        sections["recipe"] = ("The side-by-side run (`benchmarks/nano_sft_recipe.py`: LoRA bf16, LoRA fp32 and full "
                              "bf16 at equal steps) did not finish in the session that trained this adapter, "
                              "so no held-out comparison is claimed here.")
    adapter = out / "sft" / "checkpoints"
    sizes = list(adapter.glob("checkpoint-*/adapter_model.safetensors"))
    if sizes:
        sections["size"] = f"{sizes[0].stat().st_size / 1e6:.0f} MB"
    sections["shipped"] = shipped
    return sections
