"""Rewrite docs/nano.md and its charts from a nano recipe run folder.

    python scripts/nano_docs.py RUN_DIR [--shipped grpo] [--docs docs]

The recipe (`genevolve train nano --out RUN_DIR`) writes the adapter and its model card; the
repository's own page follows the shipped adapter, so it is written from the same run, on purpose,
by this script. ``--shipped`` defaults to the stage the run's ship stage chose (``stages.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genevolve.nano.report import write_docs  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="the folder given to genevolve train nano --out")
    ap.add_argument("--shipped", help="stage whose adapter is shipped (sft, grpo, grpo_sdl)")
    ap.add_argument("--docs", type=Path, default=REPO / "docs", help="the docs folder to write into")
    args = ap.parse_args()
    if not args.run_dir.is_dir():
        print(f"error: {args.run_dir} is not a run folder (make one with genevolve train nano --out DIR)",
              file=sys.stderr)
        return 2
    shipped = args.shipped
    if shipped is None:
        stages = args.run_dir / "stages.json"
        ledger = json.loads(stages.read_text(encoding="utf-8")) if stages.is_file() else {}
        shipped = (ledger.get("ship") or {}).get("shipped")
        if not shipped:
            print("error: this run has not shipped an adapter: pass --shipped STAGE", file=sys.stderr)
            return 2
    for path in write_docs(args.run_dir, shipped, args.docs):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
