"""Ten realistic requests through the ``nano`` policy: valid programs, format errors, seconds.

The requests are ours, written for this check (none is a training recipe): two quoted texts,
single and curly quotes, counts, positions, landmarks, and requests with nothing to look up.
Each runs end to end through the agent (offline tools, nano conversation). The model is loaded
once per spec; the agent starts afresh for each request (the KV cache is dropped between them).

    python benchmarks/nano_realistic.py --policy nano --out runs/realistic/bf16.jsonl
    python benchmarks/nano_realistic.py --policy 'nano?4bit=1' --out runs/realistic/nf4.jsonl
    python benchmarks/nano_realistic.py --table runs/realistic/*.jsonl   # the markdown table

A row counts as a *valid program* when the run ended in a program that keeps every quoted text of
the request (any quote style) and holds none of the model's reasoning or protocol words.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

REQUESTS = [
    'A vintage bookshop window with a sign reading "OPEN LATE" and a smaller card saying "Rare Maps Inside".',
    "A minimalist coffee bag label that says 'Morning Fog' in thin serif letters.",
    "Three red apples in a row on a wooden table, with two green pears behind them.",
    "A ginger cat sitting to the left of a potted cactus on a sunny windowsill.",
    "A postcard of the Eiffel Tower at sunset with the words “Bonjour Paris” across the sky.",
    "A watercolor of a lighthouse on a rocky cliff during a storm.",
    'A birthday card showing five candles on a chocolate cake and the text "HAPPY 40TH".',
    "The Colosseum in Rome at night, seen from above, with two tourists standing in the arena.",
    'A neon sign that reads "NOODLE BAR" above a narrow doorway, with a red lantern to the right of the door.',
    "A flat illustration of four astronauts standing in a circle on the moon, one holding a flag that says 'ARTEMIS'.",
]

# What the model's reasoning or the protocol looks like when it leaks into a gen_prompt.
_LEAK_RE = re.compile(r"</?\s*(think|tool_call|answer|tool_response)\b|\bfact\(s\)|\breference image\(s\)|"
                      r"\bI have what I need\b|\bguidance\b|\bgen_prompt\b|\bIMG_\d+", re.IGNORECASE)


def _is_check(error: str | None) -> bool:
    return bool(error) and error.startswith("the gen_prompt is not ready")


def _row(request: str, traj, seconds: float) -> dict:
    from genevolve.program import quoted_strings

    prompt = traj.program.gen_prompt if traj.program is not None else None
    quotes = quoted_strings(request)
    missing = [q for q in quotes if prompt is not None and q not in prompt]
    leaks = sorted({m.group(0) for m in _LEAK_RE.finditer(prompt or "")})
    return {"request": request, "seconds": round(seconds, 1), "rounds": len(traj.steps),
            "termination": str(getattr(traj.termination, "value", traj.termination)), "reason": traj.reason,
            # Unusable turns, apart from answers the gen_prompt check sent back (a usable turn, corrected).
            "format_errors": sum(1 for s in traj.steps if s.kind == "format_error" and not _is_check(s.error)),
            "corrections": sum(1 for s in traj.steps if s.kind == "format_error" and _is_check(s.error)),
            "program": prompt is not None, "missing_quotes": missing, "leaks": leaks,
            "valid": prompt is not None and not missing and not leaks, "gen_prompt": prompt,
            "tools": [s.tool_name for s in traj.steps if s.kind == "tool_call"]}


def run(policy_spec: str, out: Path, limit: int) -> None:
    import tempfile

    from genevolve.agent import build_agent
    from genevolve.config import Settings
    from genevolve.policies import make_policy

    t0 = time.perf_counter()
    policy = make_policy(policy_spec)
    load_s = time.perf_counter() - t0
    settings = Settings(offline=True, cache_mode="off", runs_dir=tempfile.mkdtemp(prefix="nano-realistic-"),
                        extra={"library_embeddings": False})
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps({"policy": policy_spec, "load_s": round(load_s, 1)}) + "\n")
        for request in REQUESTS[:limit]:
            reset = getattr(policy, "reset_cache", None)
            if callable(reset):
                reset()
            agent = build_agent(settings, policy=policy, offline=True)
            t = time.perf_counter()
            traj = agent.run(request)
            row = _row(request, traj, time.perf_counter() - t)
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            print(json.dumps({k: row[k] for k in ("seconds", "termination", "format_errors", "valid",
                                                   "missing_quotes", "leaks")}), flush=True)


def table(paths: list[Path], limit: int | None = None) -> str:
    """The markdown table of finished runs, each cut to its first ``limit`` requests (like with like)."""
    lines = ["| run | policy | requests | programs | valid programs | format errors (turns) | runs ended by a format error "
             "| gen_prompt corrections | median s/request |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        head, rows = rows[0], rows[1:][:limit]
        secs = sorted(r["seconds"] for r in rows)
        median = secs[len(secs) // 2] if len(secs) % 2 else (secs[len(secs) // 2 - 1] + secs[len(secs) // 2]) / 2
        lines.append(f"| {path.stem} | `{head['policy']}` | {len(rows)} | {sum(r['program'] for r in rows)} | "
                     f"{sum(r['valid'] for r in rows)} | {sum(r['format_errors'] for r in rows)} | "
                     f"{sum(r['termination'] == 'format_error' for r in rows)} | "
                     f"{sum(r.get('corrections', 0) for r in rows)} | {median:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="nano")
    ap.add_argument("--out", type=Path, default=Path("runs/realistic/nano.jsonl"))
    ap.add_argument("--limit", type=int, default=None, help="only the first N requests (default: all ten)")
    ap.add_argument("--table", nargs="+", type=Path, help="print the markdown table of finished runs")
    args = ap.parse_args()
    if args.table:
        print(table(args.table, args.limit))
    else:
        run(args.policy, args.out, args.limit or len(REQUESTS))


if __name__ == "__main__":
    main()
