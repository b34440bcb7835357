"""The nano ablation: several policies on the same held-out requests, with the same tools, renderer
and judges, measured per request and summarised with intervals.

Per system and request (one JSONL line, appended when the request is finished, so a killed run
resumes where it stopped):

- ``valid``: the trajectory ended in a program that validates against the images it saw;
- ``quotes_kept``: share of the request's quoted texts that appear verbatim in the gen_prompt
  (null when the request quotes nothing);
- ``ocr_text``: the OCR text score of the program's layout render (null without text constraints);
- ``skill_agreement``: Jaccard overlap of the skills consulted with the teacher's (both none: 1);
- ``reward``: the hybrid GRPO reward (``training.rewards.HybridReward``), 0 without a program;
- ``rounds``, ``tokens`` (assistant tokens, counted with one tokenizer for every system) and
  ``seconds``.

``summarise`` turns the lines into one row per system: shares and means, a 95% bootstrap interval
for the mean reward, and how many requests each number covers.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from genevolve.batch import BatchRun, Shared, Stage
from genevolve.durable import write_atomic

METRICS = ("valid", "quotes_kept", "ocr_text", "skill_agreement", "user_pictures_bound", "reward", "rounds", "tokens",
           "seconds")


@dataclass
class System:
    name: str
    make_policy: Callable[[], object]  # built lazily: a system's model loads only when it runs
    limit: int | None = None  # only the first ``limit`` cases (a system too slow for all of them)
    sample: int | None = None  # only a stratified sample of this many cases (paired with the rest)


def quoted_texts(request: str) -> list[str]:
    from genevolve.program import derive_constraints

    return [c.text for c in derive_constraints(request) if c.kind == "text" and c.text]


def jaccard(a, b) -> float:
    a, b = {x for x in a if x}, {x for x in b if x}
    return 1.0 if not a and not b else len(a & b) / len(a | b)


class AblationRunner:
    def __init__(self, cases: list[dict], out_dir: str | Path, *, protocol: str = "nano", count_tokens=None,
                 reward=None, log: Callable[[str], None] | None = None, max_rounds: int = 8, max_tool_calls: int = 7):
        self.cases = cases
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.batch = BatchRun(self.out)
        self.protocol = protocol
        self.count_tokens = count_tokens or (lambda text: len(text.split()))
        self._reward = reward
        self.log = log or (lambda msg: None)
        self.max_rounds, self.max_tool_calls = max_rounds, max_tool_calls  # the same caps for every system

    def reward(self):
        if self._reward is None:
            from genevolve.training.rewards import HybridReward

            self._reward = HybridReward()
        return self._reward

    def run(self, system: System) -> list[dict]:
        """Measure ``system`` on its cases; the ledger ``<system>.jsonl`` holds one line per finished
        request, so a killed run measures only what is left (the policy is built only then)."""
        from genevolve.agent import build_agent
        from genevolve.config import Settings

        def build():
            settings = Settings.load(protocol=self.protocol, cache_mode="off", max_rounds=self.max_rounds,
                                     max_tool_calls=self.max_tool_calls)
            return build_agent(settings, policy=system.make_policy(), offline=True)

        agent = Shared(build)
        cases = self.cases_of(system)

        def measure_one(case: dict) -> dict:
            t0 = time.perf_counter()
            traj = agent().run(case["question"], case.get("images") or [])
            row = self.measure(case, traj, time.perf_counter() - t0)
            row["system"] = system.name
            row["trajectory"] = traj.to_dict()  # kept, so new judges can rescore without new rollouts
            position = len(self.batch.rows(system.name)) + 1  # one worker: the rows so far, then this one
            self.log(f"{system.name} {position}/{len(cases)} {case['id']}: valid={row['valid']} "
                     f"reward={row['reward']:.2f} rounds={row['rounds']} {row['seconds']:.0f}s")
            return row

        self.batch.run_stage(Stage(system.name, measure_one), cases)
        return self.rows(system.name)

    def cases_of(self, system: System) -> list[dict]:
        if system.sample:
            return stratified_subset(self.cases, system.sample)
        return self.cases[: system.limit] if system.limit else self.cases

    def rescore(self, system: str) -> list[dict]:
        """Measure the stored trajectories again (after a judge or reward changed); rollouts are kept."""
        from genevolve.trajectory import Trajectory

        cases = {c["id"]: c for c in self.cases}
        rows = []
        for old in self.rows(system):
            traj = Trajectory.from_dict(old["trajectory"])
            row = {**self.measure(cases[old["id"]], traj, old["seconds"]), "tokens": old["tokens"],
                   "system": system, "trajectory": old["trajectory"]}
            rows.append(row)
        write_atomic(self.batch.ledger(system), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self.batch.rows(system, fresh=True)
        return rows

    def measure(self, case: dict, traj, seconds: float) -> dict:
        from genevolve.bench.programs import user_pictures_bound
        from genevolve.program import validate_program

        program = traj.program
        valid = program is not None and not validate_program(program, {i.img_id for i in traj.images})
        quotes = quoted_texts(case["question"])
        prompt = program.gen_prompt if program else ""
        quotes_kept = (sum(q in prompt for q in quotes) / len(quotes)) if quotes else None
        ocr = None
        reward = self.reward()(case, traj)
        if program is not None and program.text_constraints():
            from genevolve.judges.verify import verify_image
            from genevolve.renderers import render_with_report

            image, _report = render_with_report(self.reward().renderer, program, seed=0)
            ocr = verify_image(image, program)["text_score"]
        teacher = (case.get("teacher") or {}).get("skills") or []
        return {"id": case["id"], "category": case.get("category"), "track": case.get("track"),
                "termination": traj.termination, "valid": bool(valid), "quotes_kept": quotes_kept,
                "ocr_text": ocr, "skill_agreement": jaccard(traj.skills_used(), teacher),
                "user_pictures_bound": user_pictures_bound(program, traj),
                "reward": float(reward.total), "reward_components": reward.components,
                "rounds": len(traj.steps),
                "tokens": sum(self.count_tokens(s.assistant_text or "") for s in traj.steps),
                "seconds": round(seconds, 2), "skills": traj.skills_used(),
                "gen_prompt": prompt[:2000] if program else None}

    def rows(self, system: str) -> list[dict]:
        """The measured rows of ``system`` in case order."""
        return self.batch.ordered(system, self.cases)


def bootstrap_ci(values: list[float], *, resamples: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of the mean."""
    if not values:
        return None
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def summarise(rows_by_system: dict[str, list[dict]]) -> list[dict]:
    out = []
    for name, rows in rows_by_system.items():
        row: dict = {"system": name, "requests": len(rows)}
        for metric in METRICS:
            vals = [float(r[metric]) for r in rows if r.get(metric) is not None]
            row[metric] = round(sum(vals) / len(vals), 4) if vals else None
            row[f"{metric}_n"] = len(vals)
        ci = bootstrap_ci([float(r["reward"]) for r in rows])
        row["reward_ci95"] = [round(ci[0], 4), round(ci[1], 4)] if ci else None
        out.append(row)
    return out


def paired(rows_by_system: dict[str, list[dict]], system: str, baseline: str, *, resamples: int = 2000,
           seed: int = 0) -> dict | None:
    """``system`` against ``baseline`` on the requests both ran: the mean reward difference with a
    95% paired bootstrap interval (requests resampled together), and wins/ties/losses."""
    a = {r["id"]: float(r["reward"]) for r in rows_by_system.get(system, [])}
    b = {r["id"]: float(r["reward"]) for r in rows_by_system.get(baseline, [])}
    ids = sorted(a.keys() & b.keys())
    if not ids:
        return None
    diffs = [a[i] - b[i] for i in ids]
    ci = bootstrap_ci(diffs, resamples=resamples, seed=seed)
    return {"system": system, "baseline": baseline, "requests": len(ids),
            "system_reward": round(sum(a[i] for i in ids) / len(ids), 4),
            "baseline_reward": round(sum(b[i] for i in ids) / len(ids), 4),
            "delta": round(sum(diffs) / len(diffs), 4), "delta_ci95": [round(ci[0], 4), round(ci[1], 4)],
            "wins": sum(d > 1e-9 for d in diffs), "ties": sum(abs(d) <= 1e-9 for d in diffs),
            "losses": sum(d < -1e-9 for d in diffs)}


def paired_table(comparisons: list[dict], header: str | None = None, label: str | None = None) -> str:
    """One row per paired comparison; ``label`` names a first column taken from each comparison
    (``metric`` for the program-quality eval), ``header`` replaces the header row."""
    lead = f"| {label} " if label else ""
    lines = [header or (lead + "| system | against | requests | reward | against's reward | difference [95% CI] | "
                        "wins / ties / losses |"),
             "|---" * (8 if label else 7) + "|"]
    for c in comparisons:
        lo, hi = c["delta_ci95"]
        first = f"| {c[label]} " if label else ""
        lines.append(f"{first}| {c['system']} | {c['baseline']} | {c['requests']} | {c['system_reward']:.3f} | "
                     f"{c['baseline_reward']:.3f} | {c['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}] | "
                     f"{c['wins']} / {c['ties']} / {c['losses']} |")
    return "\n".join(lines)


def markdown_table(summary: list[dict]) -> str:
    head = ("| system | requests | valid program | quoted texts kept | OCR text score | skills vs teacher | "
            "user pictures bound | mean reward [95% CI] | rounds | tokens | seconds |\n" + "|---" * 11 + "|")
    lines = [head]

    def pct(v):
        return "–" if v is None else f"{100 * v:.0f}%"

    def num(v, digits=2):
        return "–" if v is None else f"{v:.{digits}f}"

    for r in summary:
        ci = r["reward_ci95"]
        reward = "–" if r["reward"] is None else f"{r['reward']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
        lines.append(f"| {r['system']} | {r['requests']} | {pct(r['valid'])} | {pct(r['quotes_kept'])} "
                     f"(n={r['quotes_kept_n']}) | {num(r['ocr_text'])} (n={r['ocr_text_n']}) | "
                     f"{num(r['skill_agreement'])} | {pct(r.get('user_pictures_bound'))} "
                     f"(n={r.get('user_pictures_bound_n', 0)}) | {reward} | {num(r['rounds'], 1)} | {num(r['tokens'], 0)} | "
                     f"{num(r['seconds'], 1)} |")
    return "\n".join(lines)


def chart(summary: list[dict], path: str | Path) -> Path:
    """Bars per system: valid-program share, quoted texts kept, and mean reward with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{r['system']} (n={r['requests']})" for r in summary]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), constrained_layout=True)
    panels = [("valid", "valid program", None), ("quotes_kept", "quoted texts kept verbatim", None),
              ("reward", "mean hybrid reward (95% CI)", "reward_ci95")]
    for ax, (key, title, ci_key) in zip(axes, panels):
        vals = [r[key] or 0.0 for r in summary]
        err = None
        if ci_key:
            err = [[max(0.0, v - (r[ci_key] or [v, v])[0]) for v, r in zip(vals, summary)],
                   [max(0.0, (r[ci_key] or [v, v])[1] - v) for v, r in zip(vals, summary)]]
        ax.bar(names, vals, yerr=err, capsize=4, color="#4c6ef5")
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")  # long names never overlap
        for i, v in enumerate(vals):
            top = v + (err[1][i] if err else 0.0)  # above the interval's upper end, never on it
            ax.text(i, min(top + 0.03, 1.0), f"{v:.2f}", ha="center", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def stratified_subset(cases: list[dict], n: int, seed: int = 0) -> list[dict]:
    """``n`` cases spread over categories (round-robin over a seeded order within each)."""
    by_cat: dict[str, list[dict]] = {}
    for c in sorted(cases, key=lambda c: random.Random(f"{seed}:{c['id']}").random()):
        by_cat.setdefault(c.get("category") or "", []).append(c)
    out: list[dict] = []
    while len(out) < min(n, len(cases)):
        for cat in sorted(by_cat):
            if by_cat[cat] and len(out) < n:
                out.append(by_cat[cat].pop(0))
    return sorted(out, key=lambda c: c["id"])
