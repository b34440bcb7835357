"""Ours vs the official GenEvolve runtime, side by side against one scripted chat-completions server.

Both runtimes talk to the same endpoint — ``tests/helpers/chat_server.py``, a real HTTP server on
127.0.0.1, run in its own process like a real vLLM server would be — and get the same tool
latencies. Every request is three turns: search → image_search → answer. The server decides each
turn from the request text and the number of assistant turns so far, so distinct requests send
distinct tool arguments and the rollouts of one prompt send identical ones.

Workloads (all in one run, ratios official/ours; > 1 means ours is faster):

1. zero latency: wall time per round (loopback HTTP + loop + tools that cost nothing), serial; ours
   streams, and for reference also runs asking for whole answers as the official runtime does;
2. 32 distinct requests, 200 ms per turn at the server + 300 ms per tool call, one by one;
3. the same, 8 at a time;
4. GRPO-style: 8 prompts × 6 rollouts, 8 at a time, the 6 rollouts of a prompt submitted together
   (so they run at the same time and ask the same tool questions at the same moment);
5. the same 48 rollouts leader-first (the first rollout of every prompt, then the second, ...; a
   schedule kept here, the product's GRPO rolls a group out in lock step instead); the official
   runtime gets the same order.

First, the client alone (``client``): one turn, streamed and not, through the openai SDK and through
our lean client (``genevolve/policies/chat_stream.py``) — the before/after of the hot path.

Ours runs as the product runs: streaming tokens from the endpoint, the SQLite store saving every
trajectory, the SQLite tool cache in front of every tool (a fresh cache per workload). The official
runtime runs as its ``scripts/run_agent.py`` drives it: one ``GenEvolveAgent`` (non-streaming
openai client, no store, no cache) shared by a thread pool; its tools are replaced by stand-ins
with the same latencies (its constructor takes tool objects). The official code is imported from
the checkout given with ``--official`` under another package name; nothing of it is copied here.

    python benchmarks/runtime_vs_official.py [--official PATH] [--requests 32] [--parallel 8]
        [--prompts 8] [--group 6] [--overhead-trajectories 30] [--overhead-repeats 10] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from genevolve.protocol import format_answer, format_tool_call  # noqa: E402

TARGETS = {"overhead": 1.0, "overhead_nostream": None, "distinct_serial": 1.0, "distinct_parallel": 1.0,
           "group_together": 1.6, "group": 1.6}


# ---------------------------------------------------------------------- the scripted endpoint

def _request_text(body: dict) -> str:
    for m in body["messages"]:
        if m["role"] == "user":
            content = m["content"]
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
            return content
    return ""


def reply(body: dict) -> str:
    """The next turn of this conversation: tool arguments follow the request text."""
    request = _request_text(body)
    n = sum(m["role"] == "assistant" for m in body["messages"])
    if n == 0:
        return format_tool_call("search", {"queries": [f"{request} facts", f"{request} history"]},
                                think="I need facts about the subject before writing the prompt.")
    if n == 1:
        return format_tool_call("image_search", {"query": f"{request} photo"},
                                think="A reference photo will anchor the look of the subject.")
    return format_answer({"gen_prompt": f"{request}: the tower at dusk, warm light, bold serif title at the top.",
                          "reference_images": []}, think="I have enough to write the program.")


def serve(latency: float) -> None:
    """Child-process entry: run the server, print its base URL, stay up until stdin closes."""
    from helpers.chat_server import ChatServer

    with ChatServer(reply, latency=latency) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()


class Endpoint:
    """The scripted server in its own process (a real endpoint never shares our interpreter)."""

    def __init__(self, latency: float):
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(latency)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url.startswith("http"):
            raise RuntimeError("the scripted chat server did not start")

    def cpu_s(self) -> float:
        """CPU seconds the server process has used (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> "Endpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------------- ours

class Ours:
    name = "ours"

    def __init__(self, base_url: str, tool_latency: float, work: Path):
        from genevolve.agent import Agent, AgentConfig
        from genevolve.policies.openai import OpenAIPolicy
        from genevolve.store import Store
        from genevolve.tools.base import Tool, ToolResult
        from genevolve.tools.cache import ToolCache, wrap_with_cache

        class Waiting(Tool):
            def __init__(self, name: str):
                self.name = name
                self.calls = 0

            def __call__(self, args, ctx):
                self.calls += 1
                if tool_latency:
                    time.sleep(tool_latency)
                return ToolResult(text=f"{self.name} results for {json.dumps(args)}: 1. a tower 2. a city")

        work.mkdir(parents=True, exist_ok=True)
        self.backends = [Waiting("search"), Waiting("image_search"), Waiting("query_knowledge")]
        self.cache = ToolCache(work / "tool_cache.db")
        tools = wrap_with_cache({t.name: t for t in self.backends}, self.cache)
        self.agent = Agent(OpenAIPolicy("bench", base_url, timeout=60), tools, AgentConfig(),
                           store=Store(work / "store.db"), work_dir=work / "runs")

    def run(self, request: str) -> int:
        traj = self.agent.run(request)
        assert traj.termination == "answer", traj.reason
        return len(traj.steps)

    def run_groups(self, prompts: list[str], group_size: int, parallel: int) -> int:
        """``group_size`` rollouts of each prompt, ``parallel`` at a time, leader-first."""
        from concurrent.futures import ThreadPoolExecutor

        order = _leader_first(len(prompts), group_size)
        with ThreadPoolExecutor(max_workers=max(parallel, 1), thread_name_prefix="rollout") as pool:
            trajectories = list(pool.map(lambda p: self.agent.run(prompts[p]), order))
        groups: list[list] = [[] for _ in prompts]
        for p, traj in zip(order, trajectories):
            groups[p].append(traj)
        bad = [t.reason for g in groups for t in g if t.termination != "answer"]
        assert not bad, bad[:3]
        return sum(len(t.steps) for g in groups for t in g)

    def backend_calls(self) -> int:
        return sum(t.calls for t in self.backends)


# ---------------------------------------------------------------------- the official runtime

def import_official(path: Path):
    """The official package from a checkout, as ``genevolve_official`` (ours owns ``genevolve``)."""
    init = path / "genevolve" / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"--official {path}: no genevolve/__init__.py there; give the root of a checkout of "
                         "github.com/MeiGen-AI/GenEvolve")
    spec = importlib.util.spec_from_file_location("genevolve_official", init,
                                                  submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["genevolve_official"] = module
    spec.loader.exec_module(module)
    return module


class Official:
    name = "official"

    def __init__(self, package, base_url: str, tool_latency: float):
        counter = self

        class Text:
            def call(self, queries=(), top_k=5, **_):
                counter.calls += 1
                if tool_latency:
                    time.sleep(tool_latency)
                return f"search results for {json.dumps(list(queries))}: 1. a tower 2. a city"

        class Images:
            def call(self, query="", top_k=5, **_):
                counter.calls += 1
                if tool_latency:
                    time.sleep(tool_latency)
                return [{"title": f"{query} {i}", "url": f"https://example.org/{i}.jpg"} for i in range(2)]

        class Knowledge:
            def call(self, skill_name="", **_):
                counter.calls += 1
                if tool_latency:
                    time.sleep(tool_latency)
                return f"guidance for {skill_name}"

        self.calls = 0
        self.agent = package.GenEvolveAgent(model="bench", base_url=base_url, api_key="EMPTY",
                                            text_search_tool=Text(), image_search_tool=Images(),
                                            knowledge_tool=Knowledge(), request_timeout=60)

    def run(self, request: str) -> int:
        result = self.agent.run(request)
        assert result.termination == "answer", (result.termination, result.error)
        return result.rounds

    def backend_calls(self) -> int:
        return self.calls


# ---------------------------------------------------------------------- the client alone

def client_costs(base_url: str, n: int) -> dict:
    """CPU per turn of the openai SDK and of our lean client, streaming and not, on one turn."""
    import openai

    from genevolve.policies.chat_stream import ChatStreamClient

    messages = [{"role": "system", "content": "You plan image prompts. " * 80},
                {"role": "user", "content": 'Poster of the Eiffel Tower titled "PARIS"'}]
    body = {"model": "bench", "messages": messages, "temperature": 0.7, "max_tokens": 2048,
            "stop": ["</tool_call>", "</answer>"]}
    sdk = openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)
    lean = ChatStreamClient(base_url, "EMPTY")

    def sdk_stream():
        for chunk in sdk.chat.completions.create(stream=True, **body):
            if chunk.choices and chunk.choices[0].delta.content:
                pass

    ways = {"openai SDK, streaming": sdk_stream,
            "lean client, streaming": lambda: list(lean.stream(body, end_at=body["stop"])),
            "openai SDK, whole answer": lambda: sdk.chat.completions.create(**body).choices[0].message.content,
            "lean client, whole answer": lambda: lean.complete(body, end_at=body["stop"])}
    out = {}
    for name, fn in ways.items():
        for _ in range(5):
            fn()
    for name, fn in ways.items():
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        out[name] = {"wall_ms": 1000 * (time.perf_counter() - t0) / n, "cpu_ms": 1000 * (time.process_time() - c0) / n}
    return out


# ---------------------------------------------------------------------- workloads

def timed(runtime, requests: list[str], parallel: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    if parallel <= 1:
        rounds = sum(runtime.run(r) for r in requests)
    else:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            rounds = sum(pool.map(runtime.run, requests))
    return time.perf_counter() - t0, rounds


def _leader_first(n_prompts: int, group_size: int) -> list[int]:
    """Prompt indices in the order their rollouts start: every prompt once, then again, ..."""
    return [p for _ in range(group_size) for p in range(n_prompts)]


def build(kind: str, official_pkg, base_url: str, tool_latency: float, tmp: Path, tag: str):
    if kind == "ours":
        return Ours(base_url, tool_latency, tmp / f"ours-{tag}")
    return Official(official_pkg, base_url, tool_latency)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", type=Path, help="a checkout of github.com/MeiGen-AI/GenEvolve")
    ap.add_argument("--overhead-trajectories", type=int, default=30, help="trajectories per batch")
    ap.add_argument("--overhead-repeats", type=int, default=10, help="alternating batches; the best of each counts")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=6)
    ap.add_argument("--turn-latency", type=float, default=0.2)
    ap.add_argument("--tool-latency", type=float, default=0.3)
    ap.add_argument("--only", default="client,overhead,distinct,group", help="comma-separated workloads to run")
    ap.add_argument("--client-turns", type=int, default=200)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    official_pkg = import_official(args.official.resolve()) if args.official else None
    kinds = ["official", "ours"] if official_pkg else ["ours"]
    only = set(args.only.split(","))
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "client" in only:
            with Endpoint(0.0) as ep:
                clients = client_costs(ep.base_url, args.client_turns)
            print("| one turn (search call, ~40 SSE events), zero latency | wall per turn | client CPU per turn |")
            print("|---|---|---|")
            for name, m in clients.items():
                print(f"| {name} | {m['wall_ms']:.2f} ms | {m['cpu_ms']:.2f} ms |")
            print()
        if "overhead" in only:
            with Endpoint(0.0) as ep:
                runtimes = {k: build(k, official_pkg, ep.base_url, 0.0, tmp, "overhead") for k in kinds}
                # For reference: ours asking for whole answers, as the official runtime does.
                runtimes["ours_nostream"] = build("ours", official_pkg, ep.base_url, 0.0, tmp, "overhead-nostream")
                runtimes["ours_nostream"].agent.policy.use_stream = False
                for rt in runtimes.values():
                    timed(rt, [f"warm-up {i}" for i in range(5)], 1)
                # Short batches, alternating runtimes: a burst of load from elsewhere on the machine
                # hits one batch, not one runtime; the best batch of each counts, the median is kept too.
                per_round = {k: [] for k in runtimes}
                cpu = {k: [] for k in runtimes}
                for rep in range(args.overhead_repeats):
                    for k, rt in runtimes.items():
                        reqs = [f'Poster {rep}-{i} of the Eiffel Tower titled "PARIS"'
                                for i in range(args.overhead_trajectories)]
                        c0, s0 = time.process_time(), ep.cpu_s()
                        elapsed, rounds = timed(rt, reqs, 1)
                        per_round[k].append(1000 * elapsed / rounds)
                        cpu[k].append((1000 * (time.process_time() - c0) / rounds, 1000 * (ep.cpu_s() - s0) / rounds))

                def overhead_row(label: str, ours_key: str) -> dict:
                    row = {"label": label, "unit": "ms"}
                    for k, src in (("official", "official"), ("ours", ours_key)):
                        if src in per_round:
                            row.update({k: min(per_round[src]), f"{k}_median": statistics.median(per_round[src]),
                                        f"{k}_cpu_client": statistics.median(c for c, _ in cpu[src]),
                                        f"{k}_cpu_server": statistics.median(sv for _, sv in cpu[src])})
                    return row

                rows["overhead"] = overhead_row("zero latency: wall time per round (incl. loopback HTTP), streaming",
                                                "ours")
                rows["overhead_nostream"] = overhead_row("same, ours not streaming (for reference)", "ours_nostream")
        if "distinct" in only or "group" in only:
            with Endpoint(args.turn_latency) as ep:
                requests = [f'Poster {i} of the Eiffel Tower titled "PARIS"' for i in range(args.requests)]
                prompts = [f'Cover {p} for a travel magazine, "PARIS" in bold serif' for p in range(args.prompts)]
                together = [prompts[p] for p in range(args.prompts) for _ in range(args.group)]
                leader_first = [prompts[p] for p in _leader_first(args.prompts, args.group)]
                plan = []
                if "distinct" in only:
                    plan += [("distinct_serial", f"{args.requests} distinct requests, serial", requests, 1),
                             ("distinct_parallel", f"same, parallel {args.parallel}", requests, args.parallel)]
                if "group" in only:
                    plan += [("group_together", f"GRPO-style: {args.prompts} prompts x {args.group} rollouts, "
                                                f"parallel {args.parallel}, a prompt's rollouts together",
                              together, args.parallel),
                             ("group", "same, leader-first", leader_first, args.parallel)]
                for key, label, reqs, parallel in plan:
                    row = {"label": label, "unit": "s"}
                    for k in kinds:
                        rt = build(k, official_pkg, ep.base_url, args.tool_latency, tmp, key)
                        rt.run("warm-up request")
                        calls0 = rt.backend_calls()
                        if key == "group" and k == "ours":
                            t0 = time.perf_counter()
                            rt.run_groups(prompts, args.group, parallel)
                            row[k] = time.perf_counter() - t0
                        else:
                            row[k], _ = timed(rt, reqs, parallel)
                        row[f"{k}_tool_calls"] = rt.backend_calls() - calls0
                    rows[key] = row
    if rows:
        print_table(rows, kinds, args)
    if args.json_out:
        args.json_out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                             "clients": clients if "client" in only else None,
                                             "load_average": os.getloadavg()}, indent=2))


def print_table(rows: dict, kinds: list[str], args) -> None:
    ideal = 3 * args.turn_latency + 2 * args.tool_latency
    print(f"# load average {os.getloadavg()[0]:.2f}; one request = 3 turns + 2 tool calls "
          f"(ideal {ideal:.1f} s at {args.turn_latency * 1000:.0f} ms/turn, {args.tool_latency * 1000:.0f} ms/tool)")
    head = "| workload | " + " | ".join(kinds) + (" | official/ours | target |" if "official" in kinds else " |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for key, row in rows.items():
        unit = row["unit"]
        cells = []
        for k in kinds:
            cell = f"{row[k]:.2f} {unit}"
            if f"{k}_median" in row:
                cell += (f" (median {row[f'{k}_median']:.2f}; CPU per round: runtime {row[f'{k}_cpu_client']:.2f} "
                         f"+ endpoint {row[f'{k}_cpu_server']:.2f})")
            if f"{k}_tool_calls" in row:
                cell += f" ({row[f'{k}_tool_calls']} tool calls)"
            cells.append(cell)
        line = f"| {row['label']} | " + " | ".join(cells)
        if "official" in kinds:
            ratio = row["official"] / row["ours"]
            row["ratio"] = ratio
            target = TARGETS[key]
            mark = "—" if target is None else f">= {target}x " + ("met" if ratio >= target else "missed")
            line += f" | **{ratio:.2f}x** | {mark}"
        print(line + " |")


if __name__ == "__main__":
    main()
