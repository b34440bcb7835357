"""Runtime overhead per round: parsing, validation, bookkeeping and the store, with a scripted policy.

The policy and tools cost nothing here, so what remains is the agent loop itself. Baseline (same
run): producing the same turns and tool results without the agent. Target: < 2 ms per round.

    python benchmarks/runtime_overhead.py [--trajectories 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genevolve.agent import Agent, AgentConfig  # noqa: E402
from genevolve.protocol import format_answer, format_tool_call  # noqa: E402
from genevolve.store import Store  # noqa: E402
from genevolve.tools.base import Tool, ToolResult  # noqa: E402

TURNS = [format_tool_call("search", {"queries": ["Eiffel Tower", "Paris poster"]}, think="facts first " * 5),
         format_tool_call("query_knowledge", {"skill_name": "text_rendering"}, think="exact text"),
         format_tool_call("search", {"queries": ["bold serif title"]}, think="typography"),
         format_tool_call("query_knowledge", {"skill_name": "spatial_layout"}, think="layout"),
         format_answer({"gen_prompt": 'A 1990s travel-magazine cover, two backpackers in front of the Eiffel '
                                      'Tower, title "PARIS" in bold serif at the top. ' * 3,
                        "reference_images": []}, think="ready")]
RESULT = "Search results:\n" + "\n".join(f"{i}. **Result {i}** — some text about the tower. (source: doc{i}.md)"
                                         for i in range(5))


class Scripted:
    name = "scripted"

    def __init__(self):
        self.i = 0

    def stream(self, messages, images=()):
        turn = TURNS[self.i % len(TURNS)]
        self.i += 1
        for k in range(0, len(turn), 32):
            yield turn[k:k + 32]


class Instant(Tool):
    def __init__(self, name):
        self.name = name

    def __call__(self, args, ctx):
        return ToolResult(text=RESULT)


def baseline(n: int) -> float:
    """The policy's chunks and the tools' results alone, no agent."""
    policy, tool = Scripted(), Instant("search")
    t0 = time.perf_counter()
    for _ in range(n):
        for _ in TURNS:
            "".join(policy.stream([]))
            tool({}, None)
    return time.perf_counter() - t0


def agent_time(n: int, store: Store | None, work: Path) -> float:
    tools = [Instant("search"), Instant("query_knowledge")]
    t0 = time.perf_counter()
    for _ in range(n):
        traj = Agent(Scripted(), tools, AgentConfig(), store=store, work_dir=work).run('poster "PARIS"')
        assert traj.termination == "answer", traj.reason
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trajectories", type=int, default=200)
    n = ap.parse_args().trajectories
    rounds = n * len(TURNS)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        agent_time(5, None, work)  # warm imports and caches
        base = baseline(n)
        no_store = agent_time(n, None, work)
        with_store = agent_time(n, Store(work / "bench.db"), work)
    out = {
        "trajectories": n, "rounds": rounds,
        "baseline_ms_per_round": 1000 * base / rounds,
        "agent_ms_per_round_no_store": 1000 * no_store / rounds,
        "agent_ms_per_round_with_store": 1000 * with_store / rounds,
        "overhead_ms_per_round_no_store": 1000 * (no_store - base) / rounds,
        "overhead_ms_per_round_with_store": 1000 * (with_store - base) / rounds,
        "store_ms_per_trajectory": 1000 * (with_store - no_store) / n,
    }
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}, indent=2))


if __name__ == "__main__":
    main()
