"""Which tool a nano adapter reaches for first, and how likely it was to pick ``search``.

GRPO can only reinforce what rollouts try: a policy that gives ``search`` a probability near zero
never samples it, and no reward brings it back. This measures that probability directly. For each
request the adapter writes its first turn greedily, under the turn grammar, in the nano conversation (the think, then the
tool call); at the position of the tool's name, the next-token distribution gives p(search),
p(image_search) and p(query_knowledge) (each name starts with its own token in Gemma's vocabulary).

Requests come in groups, each with what the teacher did on it:

- ``train, teacher searched`` / ``train, teacher did not``: requests of the SFT records of a data
  build (``--data DIR``, the ``data`` folder), split by the teacher's first tool;
- ``held-out knowledge``: requests of that build's eval split in the knowledge categories, whose
  named things no SFT record shows;
- ``public, teacher searched`` / ``public, teacher did not``: the requests of a planner run of
  ``genevolve eval programs`` (``--teacher-run DIR``, public prompt sets nobody here wrote), split
  by whether the planner called ``search``.

    python benchmarks/nano_tool_choice.py --data runs/nano/data --teacher-run runs/programs/planner \\
        [--adapter DIR] [--per-group 10] [--out tool_choice.json]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
from pathlib import Path

TOOLS = ("search", "image_search", "query_knowledge")
NAME_AT = '"name": "'


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _teacher_first_tool(record: dict) -> str | None:
    for message in record["messages"]:
        if message["role"] == "assistant" and "<tool_call>" in message["content"]:
            m = re.search(r'"name":\s*"(\w+)"', message["content"])
            return m.group(1) if m else None
    return None


def request_groups(data: Path | None, teacher_run: Path | None, per_group: int, seed: int = 0) -> dict:
    """{group: [request, …]}, at most ``per_group`` each, requests that give no picture only."""
    rng = random.Random(seed)
    groups: dict[str, list[str]] = {}

    def take(name: str, requests: list[str]) -> None:
        requests = list(dict.fromkeys(requests))
        groups[name] = rng.sample(requests, min(per_group, len(requests)))

    if data is not None:
        from genevolve.data.recipes import KNOWLEDGE_CATEGORIES

        train = [r for r in _read_jsonl(data / "train.jsonl") if not r.get("images")]
        take("train, teacher searched", [r["request"] for r in train if _teacher_first_tool(r) == "search"])
        take("train, teacher did not", [r["request"] for r in train if _teacher_first_tool(r) != "search"])
        held_out = [e for e in _read_jsonl(data / "eval.jsonl") if not e.get("images")]
        take("held-out knowledge", [e["question"] for e in held_out if e.get("category") in KNOWLEDGE_CATEGORIES])
    if teacher_run is not None:
        searched, other = [], []
        for path in sorted((teacher_run / "cases").glob("*/trajectory.json")):
            traj = json.loads(path.read_text(encoding="utf-8"))
            if traj.get("user_image_ids"):
                continue
            tools = {s.get("tool_name") for s in traj.get("steps", [])}
            (searched if "search" in tools else other).append(traj["request"])
        take("public, teacher searched", searched)
        take("public, teacher did not", other)
    return groups


def first_tool(policy, request: str, system_prompt: str) -> dict:
    """The adapter's greedy first turn on ``request``, decoded under the turn grammar as the runtime
    decodes it, and its distribution over the tool names at the name's position."""
    import torch

    from genevolve.policies.grammar import turn_rules
    from genevolve.profiles import get_profile

    messages = [{"role": "system", "content": system_prompt},
                {"role": "user", "content": get_profile("nano").request_message(request, None)}]
    policy.prepare_turn(turn_rules())  # the first turn's rules: the three tools, no picture shown yet
    turn = "".join(policy.stream(messages))
    at = turn.find(NAME_AT)
    if at < 0:  # an answer first
        return {"request": request, "turn": turn[:300], "p": None, "greedy": None}
    # The model's own distribution at the name, before any grammar mask: how likely sampling is to try it.
    tok = policy.tokenizer
    prefix = tok(policy.render_prompt(messages) + turn[:at + len(NAME_AT)], return_tensors="pt",
                 add_special_tokens=False).input_ids
    with torch.no_grad():
        probs = torch.softmax(policy.model(prefix).logits[0, -1].float(), -1)
    p = {name: float(probs[tok.encode(name, add_special_tokens=False)[0]]) for name in TOOLS}
    m = re.match(r"(\w+)", turn[at + len(NAME_AT):])
    return {"request": request, "think": turn[:at][:300], "p": p, "greedy": m.group(1) if m else None}


def summarise(results: dict) -> list[dict]:
    rows = []
    for group, items in results.items():
        measured = [r for r in items if r["p"] is not None]
        p_search = [r["p"]["search"] for r in measured]
        rows.append({
            "group": group, "requests": len(items), "tool_first": len(measured),
            "p_search_mean": statistics.fmean(p_search) if p_search else None,
            "p_search_max": max(p_search) if p_search else None,
            "greedy_search": sum(r["greedy"] == "search" for r in measured),
            # the chance that a group of 6 sampled rollouts (temperature 1) holds at least one search
            "group_of_6_searches": (statistics.fmean(1 - (1 - p) ** 6 for p in p_search) if p_search else None),
        })
    return rows


def markdown(rows: list[dict]) -> str:
    def f(v, pct=False):
        return "–" if v is None else (f"{v:.0%}" if pct else f"{v:.4f}")

    out = ["| requests | n | first turn is a tool call | mean p(search) | max p(search) | greedy picks search "
           "| a group of 6 samples search |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['group']} | {r['requests']} | {r['tool_first']} | {f(r['p_search_mean'])} | "
                   f"{f(r['p_search_max'])} | {r['greedy_search']} | {f(r['group_of_6_searches'], True)} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="a data build's data folder (train.jsonl, eval.jsonl)")
    ap.add_argument("--teacher-run", type=Path, help="a planner run of `genevolve eval programs` (cases/*/trajectory.json)")
    ap.add_argument("--adapter", help="a LoRA adapter folder (default: the shipped assets/adapters/nano)")
    ap.add_argument("--per-group", type=int, default=10)
    ap.add_argument("--out", type=Path, help="write every request's turn and probabilities here (JSON)")
    args = ap.parse_args()
    if args.data is None and args.teacher_run is None:
        ap.error("give --data, --teacher-run or both: they say which requests to measure")
    from genevolve.policies.local import LocalPolicy

    groups = request_groups(args.data, args.teacher_run, args.per_group)
    from genevolve.profiles import get_profile

    policy = LocalPolicy.nano(adapter=args.adapter)  # greedy, under the turn grammar, like the runtime
    policy.model.eval()
    system_prompt = get_profile("nano").system_prompt()
    results = {}
    for group, requests in groups.items():
        results[group] = []
        for i, request in enumerate(requests, 1):
            r = first_tool(policy, request, system_prompt)
            results[group].append(r)
            p = "no tool call" if r["p"] is None else f"p(search) {r['p']['search']:.4f}"
            print(f"[{group} {i}/{len(requests)}] {p} | {request[:70]}", flush=True)
    rows = summarise(results)
    if args.out:
        args.out.write_text(json.dumps({"adapter": args.adapter or "shipped", "rows": rows, "requests": results},
                                       indent=1), encoding="utf-8")
    print(markdown(rows))


if __name__ == "__main__":
    main()
