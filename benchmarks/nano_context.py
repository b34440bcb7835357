"""Tokens per planner trajectory (Gemma tokenizer) in our default conversation vs the compact nano one.

Builds the same recipes twice with the planner teacher (`genevolve data build`, offline, one
build per profile, each in a temporary folder) and counts the tokens of every kept SFT record as
the nano policy would be fed it (its chat template, no special tokens added twice).

    python benchmarks/nano_context.py [--recipes 96]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", type=int, default=96)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from genevolve.config import Settings
    from genevolve.data.pipeline import BuildConfig, DatasetBuilder
    from genevolve.policies.local import BASE_CHAT_TEMPLATE
    from genevolve.training.modeling import gemma3_270m_hf

    tok = AutoTokenizer.from_pretrained(str(gemma3_270m_hf()))
    tok.chat_template = BASE_CHAT_TEMPLATE
    rows = {}
    with tempfile.TemporaryDirectory(prefix="nano_context_") as work:
        for profile in ("genevolve", "nano"):
            out = Path(work) / profile
            settings = Settings(offline=True, cache_mode="off", runs_dir=str(Path(work) / "runs"))
            cfg = BuildConfig(recipes=args.recipes, seed=0, offline=True, protocol=profile, size=(512, 512))
            DatasetBuilder(out, cfg, settings=settings, progress=False).run()
            counts = []
            for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines():
                messages = [{"role": m["role"], "content": m["content"]} for m in json.loads(line)["messages"]]
                text = tok.apply_chat_template(messages, tokenize=False)
                counts.append(len(tok(text, add_special_tokens=False)["input_ids"]))
            rows[profile] = {"records": len(counts), "p50": round(statistics.median(counts)),
                             "p95": round(percentile(counts, 0.95)), "max": max(counts)}
            print(profile, json.dumps(rows[profile]), flush=True)
    print("\n| conversation | records | p50 tokens | p95 tokens | max |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['records']} | {r['p50']:,} | {r['p95']:,} | {r['max']:,} |")
    print(f"\nnano / genevolve at p95: {rows['nano']['p95'] / rows['genevolve']['p95']:.2f}")


if __name__ == "__main__":
    main()
