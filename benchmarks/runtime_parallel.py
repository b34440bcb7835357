"""Throughput: 32 requests at parallel 8 vs one by one, against a local chat-completions endpoint.

The endpoint (tests/helpers/chat_server.py, a real HTTP server on 127.0.0.1) adds 200 ms per turn; the
tools add 300 ms per call. Each request is search → image_search → answer (3 turns, 2 tool
calls: 1.2 s of waiting). The runtime waits on I/O, so parallel 8 should approach 8×.

    python benchmarks/runtime_parallel.py [--requests 32] [--parallel 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers.chat_server import ChatServer  # noqa: E402
from genevolve.agent import Agent, AgentConfig  # noqa: E402
from genevolve.policies.openai import OpenAIPolicy  # noqa: E402
from genevolve.protocol import format_answer, format_tool_call  # noqa: E402
from genevolve.store import Store  # noqa: E402
from genevolve.tools.base import Tool, ToolResult  # noqa: E402

TURNS = [format_tool_call("search", {"queries": ["Eiffel Tower"]}, think="facts"),
         format_tool_call("image_search", {"query": "Eiffel Tower"}, think="a picture"),
         format_answer({"gen_prompt": 'The Eiffel Tower at dusk, title "PARIS".', "reference_images": []},
                       think="ready")]


def reply(body: dict) -> str:
    """The next turn of this conversation, from how many assistant turns it already has."""
    return TURNS[min(sum(m["role"] == "assistant" for m in body["messages"]), len(TURNS) - 1)]


class SlowTool(Tool):
    def __init__(self, name: str, delay: float):
        self.name, self.delay = name, delay

    def __call__(self, args, ctx):
        time.sleep(self.delay)
        return ToolResult(text=f"{self.name} results for {args}")


def run_all(agent: Agent, requests: list[str], parallel: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        trajs = list(pool.map(agent.run, requests))
    elapsed = time.perf_counter() - t0
    bad = [t.reason for t in trajs if t.termination != "answer"]
    assert not bad, bad[:3]
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--turn-latency", type=float, default=0.2)
    ap.add_argument("--tool-latency", type=float, default=0.3)
    args = ap.parse_args()
    requests = [f'Poster {i} of the Eiffel Tower titled "PARIS"' for i in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp, ChatServer(reply, latency=args.turn_latency) as server:
        policy = OpenAIPolicy("bench", server.base_url, timeout=30)
        tools = [SlowTool("search", args.tool_latency), SlowTool("image_search", args.tool_latency)]
        agent = Agent(policy, tools, AgentConfig(), store=Store(Path(tmp) / "bench.db"), work_dir=tmp)
        agent.run("warm-up")
        sequential = run_all(agent, requests, 1)
        parallel = run_all(agent, requests, args.parallel)
    ideal = 3 * args.turn_latency + 2 * args.tool_latency
    print(json.dumps({
        "requests": args.requests, "parallel": args.parallel,
        "ideal_s_per_request": round(ideal, 3),
        "sequential_s": round(sequential, 3), "parallel_s": round(parallel, 3),
        "speedup": round(sequential / parallel, 2),
        "sequential_overhead_s_per_request": round(sequential / args.requests - ideal, 4),
    }, indent=2))


if __name__ == "__main__":
    main()
