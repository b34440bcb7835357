"""Which SFT recipe for the real Gemma 3 270M on this CPU: LoRA or full fine-tuning, bf16 or fp32.

Each variant trains the same number of steps on the same records in the same order, then scores
the same held-out records; the table reports seconds per step, trained tokens per second and
held-out loss before and after, all measured in one run (the machine is noisy: compare rows of
one run, not runs).

    python benchmarks/nano_sft_recipe.py --data runs/nano/data --steps 24 [--variants lora-bf16,full-bf16]

Variants: lora-bf16, lora-fp32 (LoRA r=16 on every linear layer) and full-bf16 (every weight but
the tied embedding matrix, which is 63% of the model and would not fit a commit-sized adapter).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "lora-bf16": {"dtype": "bfloat16", "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
                  "lr": 2e-4},
    "lora-fp32": {"dtype": "float32", "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
                  "lr": 2e-4},
    "full-bf16": {"dtype": "bfloat16", "lora": None, "freeze_embeddings": True, "lr": 2e-5},
}


def run_variant(name: str, data: Path, steps: int, eval_records: int, work: Path) -> dict:
    from genevolve.training.metrics import read_metrics
    from genevolve.training.modeling import ModelConfig
    from genevolve.training.sft import SFTConfig, train_sft

    v = VARIANTS[name]
    lines = [line for line in (data / "val.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    # Image paths in records are relative to the data folder: the subset lives there too.
    held = data / f".recipe_eval_{eval_records}.jsonl"
    held.write_text("\n".join(lines[:eval_records]) + "\n", encoding="utf-8")
    model = ModelConfig(name="gemma3-270m", dtype=v["dtype"], lora=v["lora"], max_length=2048,
                        freeze_embeddings=bool(v.get("freeze_embeddings")))
    cfg = SFTConfig(model=model, train_data=str(data / "train.jsonl"), eval_data=str(held),
                    run_dir=str(work / name), max_steps=steps, batch_size=1, grad_accum=1, lr=v["lr"],
                    warmup_steps=2, eval_every=steps, save_every=10 ** 9, resume=False)
    t0 = time.perf_counter()
    result = train_sft(cfg, quiet=True)
    wall = time.perf_counter() - t0
    rows = read_metrics(cfg.run_dir)
    train_rows = [r for r in rows if "step_s" in r]
    return {"variant": name, "steps": steps, "eval_records": eval_records, "wall_s": round(wall, 1),
            "s_per_step": round(sum(r["step_s"] for r in train_rows) / len(train_rows), 2),
            "tokens_per_s": round(sum(r["tokens"] for r in train_rows) / sum(r["step_s"] for r in train_rows), 1),
            "first_loss": round(train_rows[0]["loss"], 3), "eval_loss": round(result["best_eval_loss"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a data build folder (train.jsonl, val.jsonl)")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--eval-records", type=int, default=16)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path, help="write the JSON rows here too")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="nano_recipe_") as work:
        for name in args.variants.split(","):
            rows.append(run_variant(name.strip(), args.data, args.steps, args.eval_records, Path(work)))
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    print(f"\n| variant | s/step | tokens/s | held-out loss after {args.steps} steps | speed vs {base['variant']} |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['s_per_step']} | {r['tokens_per_s']} | {r['eval_loss']} | "
              f"{base['s_per_step'] / r['s_per_step']:.2f}× |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
