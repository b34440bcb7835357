"""Write the drafts a fresh nano process starts with: the teacher's turns on the mini bench.

nano drafts each turn from its conversation and from the turns it wrote before
(``genevolve.policies.drafting.DraftMemory``). A fresh process has written nothing yet, so its
first request drafts from the conversation alone, about 2 tokens a forward pass against 6 once the
memory holds a few requests. The adapter learned its phrasing from the planner teacher (the think
lines, the guidance sentences, the answer's JSON), so the planner's turns on other requests are
good drafts from the start. They only decide how many tokens a forward pass checks: the model
still chooses every token, so a seed that no longer matches the adapter costs speed (the output
changes only where bf16 rounds a pass over more rows differently).

    python scripts/nano_draft_seed.py [--requests 16] [--out assets/adapters/nano/draft_seed.jsonl]

The requests are the mini bench's (examples/bench_mini), none of the public sets nor the held-out
split. Offline tools, nano conversation; one JSON line per assistant turn ({"id": "case/turn", "text": ...}).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--out", type=Path, default=REPO / "assets" / "adapters" / "nano" / "draft_seed.jsonl")
    args = ap.parse_args()

    from genevolve.agent import build_agent
    from genevolve.bench.loaders import MINI_BENCH
    from genevolve.config import Settings
    from genevolve.durable import read_jsonl

    cases = read_jsonl(MINI_BENCH)[: args.requests]
    turns: list[str] = []
    with tempfile.TemporaryDirectory() as home:  # the runs and their store stay out of the user's
        settings = Settings(policy="planner", protocol="nano", offline=True, store_path=f"{home}/store.db",
                            cache_path=f"{home}/cache.db", runs_dir=f"{home}/runs")
        agent = build_agent(settings, offline=True)
        for case in cases:
            trajectory = agent.run(case["question"])
            said = [m["content"] for m in trajectory.messages if m["role"] == "assistant" and isinstance(m["content"], str)]
            turns += [{"id": f"{case['id']}/{i}", "text": text} for i, text in enumerate(said, 1)]
    args.out.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in turns), encoding="utf-8")
    print(f"{len(turns)} turns of {len(cases)} requests -> {args.out}")


if __name__ == "__main__":
    main()
