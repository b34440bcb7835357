"""Our bench runs in the official evaluator's layout: ``<run>/official/results.json``.

The record format is the official dialect's (``genevolve.official.records``); walking a bench run
folder is the bench's, so the export lives on the bench floor.
"""

from __future__ import annotations

import json
from pathlib import Path

from genevolve.bench.runner import case_dir_name
from genevolve.official.records import RecordError, trajectory_to_record
from genevolve.trajectory import Trajectory


def export_bench_run(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, dict]:
    """Write ``<run>/official/results.json`` in the layout the official evaluator reads.

    It goes in its own folder because their evaluator writes ``results_eval.json``,
    ``summary.json`` and ``summary.csv`` beside the file it reads; ours stay untouched.
    """
    run = Path(run_dir)
    cases_file = run / "cases.jsonl"
    if not cases_file.is_file():
        raise RecordError(f"{run} is not a bench run folder (no cases.jsonl); run `genevolve bench run --out {run}` first")
    target = Path(out) if out else run / "official" / "results.json"
    if target.resolve().parent == run.resolve():
        raise RecordError("write the export into its own folder (their evaluator writes summary.json beside it)")
    counts = {"records": 0, "with_image": 0, "without_program": 0}
    records = []
    for line in cases_file.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        case = json.loads(line)
        d = run / "cases" / case_dir_name(case["id"])
        traj_file = d / "trajectory.json"
        if traj_file.is_file():
            record = trajectory_to_record(Trajectory.from_dict(json.loads(traj_file.read_text(encoding="utf-8"))))
        else:
            record = {"prompt": case.get("question"), "gen_prompt": "", "reference_images": [], "messages": [],
                      "termination": "error", "rounds": 0, "error": "no rollout"}
        for key, value in case.items():  # the bench row's own fields, as their run_agent keeps them
            record.setdefault(key, value)
        record["id"] = case["id"]
        image = d / "image.png"
        if image.is_file():
            path = str(image.resolve())
            record.update(output_path=path, image_path=path, success=True, image_status="ok")
            counts["with_image"] += 1
        else:
            record.update(output_path="", image_path="", success=False,
                          image_status="error: no image (the rollout or render failed)")
        counts["without_program"] += not record["gen_prompt"]
        records.append(record)
    counts["records"] = len(records)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(records, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    tmp.replace(target)
    return target, counts
