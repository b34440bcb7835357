"""The offline planner path per request: planner + local corpus + local image library + store.

Target: < 1 s per request. Reported warm (after one warm-up request, which loads the corpus
index and, with embeddings on, the MiniLM model) for both library rankings; the baseline in the
same run is the planner alone on scripted tool results (no real tools, no store).

    python benchmarks/runtime_planner.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from genevolve.agent import Agent, build_agent  # noqa: E402
from genevolve.config import Settings  # noqa: E402
from genevolve.policies.planner import PlannerPolicy  # noqa: E402
from genevolve.store import Store  # noqa: E402
from genevolve.tools.base import Tool, ToolResult  # noqa: E402

REQUESTS = [
    'A 1990s travel-magazine cover of two backpackers in front of the Eiffel Tower, title "PARIS" in bold serif',
    "Three identical white teapots arranged in a triangle on a wooden table",
    "Portrait of an astronaut in a white suit, studio lighting, 85mm lens",
    "A ginger cat sleeping next to a steaming coffee cup, soft morning light",
    'A product shot of a glass bottle labelled "Zero Sugar" on wet marble',
    "The Golden Gate Bridge in the style of Van Gogh, surreal swirling sky",
    "A red kite above a green hill with a brick wall in the foreground",
    "A horse galloping on a beach at sunset, splashing water",
]


class Echo(Tool):
    def __init__(self, name):
        self.name = name

    def __call__(self, args, ctx):
        return ToolResult(text=f"- result for {args}")


def per_request(agent, repeats: int) -> list[float]:
    agent.run(REQUESTS[0])  # warm-up: indexes, models, imports
    times = []
    for _ in range(repeats):
        for request in REQUESTS:
            t0 = time.perf_counter()
            traj = agent.run(request)
            times.append(time.perf_counter() - t0)
            assert traj.termination == "answer", (request, traj.reason)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    out = {"requests": len(REQUESTS) * args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        base_agent = Agent(PlannerPolicy(), [Echo("search"), Echo("image_search"), Echo("query_knowledge")],
                           work_dir=tmp)
        base = per_request(base_agent, args.repeats)
        out["baseline_planner_only_ms"] = round(1000 * statistics.mean(base), 2)
        for label, embeddings in (("bm25_library", False), ("embedding_library", True)):
            settings = Settings(policy="planner", offline=True, cache_mode="off", runs_dir=tmp,
                                store_path=str(Path(tmp) / f"{label}.db"),
                                extra={"library_embeddings": embeddings})
            t0 = time.perf_counter()
            agent = build_agent(settings, store=Store(settings.store_path))
            agent.run(REQUESTS[0])
            out[f"{label}_first_request_s"] = round(time.perf_counter() - t0, 2)
            times = per_request(agent, args.repeats)
            out[f"{label}_mean_s"] = round(statistics.mean(times), 3)
            out[f"{label}_max_s"] = round(max(times), 3)
            out[f"{label}_vs_baseline"] = round(statistics.mean(times) / statistics.mean(base), 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
