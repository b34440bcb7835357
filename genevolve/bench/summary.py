"""Summaries of a bench run folder: summary.json, summary.csv (and report.html via report.py).

Per case status:

- ``scored``  - the judge returned scores;
- ``failed``  - an image existed but the judge could not score it (unreadable reply, API gave up);
- ``missing`` - nothing to judge: the rollout gave no program, the render failed, or the stage
  has not run yet.

``overall`` is the mean over scored cases whose judge could measure an overall at all (the local
judge's overall covers only the image dimensions it measured, OCR text and the renderer-reported
structure, and is None when neither applies); ``overall_n`` counts them and ``overall_parts``
says which dimensions went into the overall in how many cases, so nobody reads an OCR-only
number as a picture-quality score (``overall_note`` says it in words). ``overall_missing_zero``
counts failed and missing cases as 0 (the number to compare between systems that fail at
different rates). Dimension means are over the cases where that dimension was measured, with
``<dimension>_n`` beside each (a local judge leaves the visual dimensions None, never 0). A WISE
run also gets the weighted WISE overall by category.

A KScore run also gets ``official_overall_avg``: the "Overall Avg" the official evaluator prints,
which leaves cases whose request asks for no readable text out of the text-accuracy mean (ours
counts them at 0.5) and forms its overall from the four means; shown beside ours, named as theirs.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from pathlib import Path

from genevolve.bench.runner import latest_by_id, read_jsonl, write_atomic
from genevolve.judges.base import DIMENSIONS, METRICS

GROUP_KEYS = ("eval_type", "track", "category", "difficulty")


def case_status(case_id: str, rollout: dict, render: dict, judge: dict) -> str:
    j = judge.get(case_id)
    if j is not None and (j.get("score_status") == "scored" or j.get("status") == "ok"):
        return "scored"
    r, g = rollout.get(case_id), render.get(case_id)
    if r is None or r.get("status") != "ok" or g is None or g.get("status") != "ok" or j is None:
        return "missing"
    return "failed"


def _mean(values):
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 6) if values else None


def aggregate(rows: list[dict]) -> dict:
    """Counts and means for a group of per-case rows (each with 'status' and metric values)."""
    n = len(rows)
    scored = [r for r in rows if r["status"] == "scored"]
    out = {"cases": n, "scored": len(scored), "failed": sum(r["status"] == "failed" for r in rows),
           "missing": sum(r["status"] == "missing" for r in rows)}
    measured = [r for r in scored if r.get("overall") is not None]
    out["overall"] = _mean(r.get("overall") for r in measured)
    out["overall_n"] = len(measured)
    # Failed and missing count as 0; a scored case whose judge could measure nothing stays out.
    denominator = n - (len(scored) - len(measured))
    out["overall_missing_zero"] = (round(sum(r["overall"] for r in measured) / denominator, 6)
                                   if denominator else None)
    parts: Counter = Counter()
    for r in measured:
        parts.update(r.get("overall_parts") or [])
    out["overall_parts"] = dict(sorted(parts.items()))
    for m in METRICS:
        if m == "overall":
            continue
        vals = [r.get(m) for r in scored if r.get(m) is not None]
        out[m] = _mean(vals)
        out[f"{m}_n"] = len(vals)
    out["overall_note"] = overall_note(out)
    return out


def overall_note(agg: dict) -> str:
    """Which dimensions an overall covers, in words (the line a chart or table shows beside it)."""
    if not agg.get("overall_n"):
        return "overall: nothing measured"
    parts = agg.get("overall_parts") or {}
    covered = ", ".join(f"{k} ({v} cases)" for k, v in parts.items()) or "the judge's own formula"
    unmeasured = [d for d in (*DIMENSIONS, "structure") if not agg.get(f"{d}_n")]
    note = f"overall over {agg['overall_n']} of {agg['cases']} cases = mean of measured {covered}"
    if unmeasured:
        note += f"; not measured: {', '.join(unmeasured)}"
    return note


def load_run(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    if not (run_dir / "cases.jsonl").exists():
        raise FileNotFoundError(f"{run_dir} is not a bench run folder (no cases.jsonl)")
    cases = read_jsonl(run_dir / "cases.jsonl")
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8")) if (run_dir / "run.json").exists() else {}
    stages = {s: latest_by_id(read_jsonl(run_dir / f"{s}.jsonl")) for s in ("rollout", "render", "judge")}
    return {"dir": run_dir, "run": run, "cases": cases, **stages}


def per_case_rows(data: dict) -> list[dict]:
    rows = []
    for case in data["cases"]:
        cid = str(case["id"])
        status = case_status(cid, data["rollout"], data["render"], data["judge"])
        j = data["judge"].get(cid, {})
        r = data["rollout"].get(cid, {})
        row = {"id": cid, "status": status, **{k: case.get(k) for k in GROUP_KEYS},
               "wise_category": case.get("wise_category"),
               "error": j.get("error") or data["render"].get(cid, {}).get("error") or r.get("error"),
               "tools": r.get("tools") or [], "skills": r.get("skills") or [], "termination": r.get("termination")}
        for m in METRICS:
            row[m] = j.get(m) if status == "scored" else None
        row["text_accuracy_na"] = bool((j.get("details") or {}).get("text_accuracy_na")) if status == "scored" else None
        if status == "scored":
            parts = (j.get("details") or {}).get("overall_parts")
            if parts is None and row["overall"] is not None:  # a VLM judge: its formula's dimensions
                parts = [d for d in DIMENSIONS if row.get(d) is not None]
            row["overall_parts"] = parts or []
        rows.append(row)
    return rows


def tool_statistics(rows: list[dict]) -> dict:
    tool_counts: Counter = Counter()
    skill_counts: Counter = Counter()
    routing: dict[str, Counter] = defaultdict(Counter)
    calls_per_case = []
    terminations: Counter = Counter()
    for r in rows:
        if r["termination"] is None:
            continue
        tool_counts.update(r["tools"])
        skill_counts.update(r["skills"])
        routing[str(r.get("category"))].update(r["skills"])
        calls_per_case.append(len(r["tools"]))
        terminations[r["termination"]] += 1
    return {"tool_calls": dict(sorted(tool_counts.items())), "skills": dict(sorted(skill_counts.items())),
            "skill_routing": {k: dict(sorted(v.items())) for k, v in sorted(routing.items())},
            "mean_tool_calls": _mean(calls_per_case), "terminations": dict(sorted(terminations.items()))}


def summarize(run_dir: str | Path) -> dict:
    data = load_run(run_dir)
    rows = per_case_rows(data)
    summary = {"run": data["run"].get("identity", {}), **aggregate(rows), "by": {}}
    for key in GROUP_KEYS:
        groups: dict[str, list] = defaultdict(list)
        for r in rows:
            if r.get(key) is not None:
                groups[str(r[key])].append(r)
        if groups:
            summary["by"][key] = {k: aggregate(v) for k, v in sorted(groups.items())}
    wise_rows = [r for r in rows if r.get("wise_category")]
    if wise_rows:
        from genevolve.judges.wise import wise_overall

        by_cat: dict[str, list] = defaultdict(list)
        for r in wise_rows:
            by_cat[r["wise_category"]].append(r)
        means = {k: aggregate(v)["overall_missing_zero"] for k, v in by_cat.items()}
        summary["wise"] = {"by_category": means, "overall": wise_overall(means)}
    theirs = official_overall_avg(rows)
    if theirs is not None:
        summary["official_overall_avg"] = theirs
    summary["tools"] = tool_statistics(rows)
    summary["failures"] = [{"id": r["id"], "status": r["status"], "error": r["error"]}
                           for r in rows if r["status"] != "scored"]
    summary["timing"] = _timing(data)
    return summary


def official_overall_avg(rows: list[dict]) -> dict | None:
    """The official evaluator's "Overall Avg" over the scored KScore cases, or None when no case has
    the four KScore dimensions: means of faithfulness, visual correctness and aesthetics; text
    accuracy averaged only over cases where text applies (0.5 when none does); overall = the KScore
    weights applied to those means; all rounded to 4 decimals as it rounds them."""
    from genevolve.judges.base import KSCORE_WEIGHTS

    scored = [r for r in rows if r["status"] == "scored" and all(r.get(d) is not None for d in DIMENSIONS)]
    if not scored:
        return None
    out = {d: round(sum(r[d] for r in scored) / len(scored), 4)
           for d in ("faithfulness", "visual_correctness", "aesthetics")}
    text = [r["text_accuracy"] for r in scored if not r.get("text_accuracy_na")]
    out["text_accuracy"] = round(sum(text) / len(text), 4) if text else 0.5
    out["overall"] = round(sum(KSCORE_WEIGHTS[d] * out[d] for d in DIMENSIONS), 4)
    out["count"] = len(scored)
    out["note"] = ("the official evaluator's Overall Avg: text accuracy over the "
                   f"{len(text)} cases that ask for text, not-applicable cases left out")
    return out


def _timing(data: dict) -> dict:
    """Wall-clock facts (differ between runs; kept apart so the rest compares exactly)."""
    out = {}
    for stage in ("rollout", "render", "judge"):
        times = [r.get("elapsed_s") for r in data[stage].values() if r.get("elapsed_s") is not None]
        out[f"{stage}_mean_s"] = _mean(times)
    return out


def summary_csv(summary: dict) -> str:
    cols = ["group", "key", "cases", "scored", "failed", "missing", "overall", "overall_n", "overall_missing_zero",
            *[c for m in METRICS if m != "overall" for c in (m, f"{m}_n")]]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    w.writerow(["all", "all", *[summary.get(c) for c in cols[2:]]])
    for group, table in summary["by"].items():
        for key, agg in table.items():
            w.writerow([group, key, *[agg.get(c) for c in cols[2:]]])
    return buf.getvalue()


def write_summary(run_dir: str | Path, html: bool = True) -> dict:
    """Write summary.json, summary.csv and (by default) report.html; return the summary."""
    run_dir = Path(run_dir)
    summary = summarize(run_dir)
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    write_atomic(run_dir / "summary.csv", summary_csv(summary))
    if html:
        from genevolve.bench.report import write_report

        write_report(run_dir, summary, per_case_rows(load_run(run_dir)))
    return summary
