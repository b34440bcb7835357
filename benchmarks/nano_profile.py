"""Where a ``nano`` request's seconds go: prefill, decode (lm_head apart), grammar, Python, tools.

Realistic requests (``benchmarks/nano_realistic.py``'s) run end to end through the agent (offline
tools, nano conversation, constrained turns, KV reuse), with timers wrapped around the parts:

* ``template``   chat template + tokenization of the conversation (``LocalPolicy._inputs``)
* ``grammar build``  the turn's llguidance matcher (``TurnGrammar.processor``)
* ``prefill``    forward passes over more than one token (the new suffix of the conversation)
* ``decode``     one-token forward passes, of which ``lm_head`` is the 262k-row output projection
* ``grammar mask``  the logits processor (matcher advance + mask)
* ``stop``       the turn-end stopping criterion
* ``generate other``  the rest of ``generate`` (its loop, logits copies, the streamer's decoding)
* ``stream other``  the rest of ``stream`` (thread start, handing deltas over)
* ``tools``      the offline tools; ``agent other`` is the rest of the request's wall time

    python benchmarks/nano_profile.py [--requests 3] [--threads N] [--pack 0|1|both]

``--pack both`` runs every request twice on the same loaded model, interleaved: linears as loaded,
then with their weights packed once for oneDNN (``genevolve.policies.cpu_speed``); the tokens of
each pair are compared (greedy: they must be the same).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import statistics
import tempfile
import time

PARTS = ("template", "grammar build", "prefill", "decode", "lm_head", "grammar mask", "stop",
         "generate other", "stream other", "tools", "agent other")


class Timers:
    def __init__(self):
        self.s = collections.defaultdict(float)
        self.n = collections.defaultdict(int)

    def add(self, key: str, seconds: float, count: int = 1) -> None:
        self.s[key] += seconds
        self.n[key] += count


@contextlib.contextmanager
def instrumented(policy, timers: Timers):
    """Timers around the parts of a request (patched in, restored on exit)."""
    from genevolve.policies import grammar, local

    patches = []

    def wrap(owner, name, key):
        original = getattr(owner, name)

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                timers.add(key, time.perf_counter() - t)

        setattr(owner, name, timed)
        patches.append((owner, name, original))

    wrap(local.LocalPolicy, "_inputs", "template")
    wrap(grammar.TurnGrammar, "processor", "grammar build")
    wrap(grammar.GrammarProcessor, "__call__", "grammar mask")
    wrap(local._TurnEndCriteria, "__call__", "stop")
    wrap(local.LocalPolicy, "_generate", "generate")

    model = policy.model
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    starts: dict = {}

    def pre(module, args, kwargs):
        starts[id(module)] = time.perf_counter()

    def post_model(module, args, kwargs, out):
        ids = kwargs.get("input_ids", args[0] if args else None)
        n = ids.shape[1] if ids is not None else 1
        timers.add("prefill" if n > 1 else "decode", time.perf_counter() - starts[id(module)])
        if n == 1:
            timers.n["decode tokens"] += 1
        else:
            timers.n["prefill tokens"] += n

    def post_head(module, args, kwargs, out):
        if out.shape[1] == 1:
            timers.add("lm_head", time.perf_counter() - starts[id(module)])

    hooks = [core.register_forward_pre_hook(pre, with_kwargs=True),
             core.register_forward_hook(post_model, with_kwargs=True),
             core.get_output_embeddings().register_forward_pre_hook(pre, with_kwargs=True),
             core.get_output_embeddings().register_forward_hook(post_head, with_kwargs=True)]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()
        for owner, name, original in patches:
            setattr(owner, name, original)


def run_request(policy, settings, request: str) -> dict:
    from genevolve.agent import build_agent

    policy.reset_cache()
    timers = Timers()
    agent = build_agent(settings, policy=policy, offline=True)
    turns = []
    with instrumented(policy, timers):
        t = time.perf_counter()
        traj = agent.run(request)
        wall = time.perf_counter() - t
    policy_s = sum(s.policy_s or 0 for s in traj.steps)
    tools_s = sum(s.tool_s or 0 for s in traj.steps)
    for s in traj.steps:
        turns.append(s.assistant_text or "")
    d = timers.s
    parts = {
        "template": d["template"], "grammar build": d["grammar build"], "prefill": d["prefill"],
        "decode": d["decode"] - d["lm_head"], "lm_head": d["lm_head"], "grammar mask": d["grammar mask"],
        "stop": d["stop"],
        "generate other": d["generate"] - d["prefill"] - d["decode"] - d["grammar mask"] - d["stop"],
        "stream other": policy_s - d["generate"] - d["template"] - d["grammar build"],
        "tools": tools_s, "agent other": wall - policy_s - tools_s,
    }
    return {"request": request, "wall_s": wall, "rounds": len(traj.steps), "program": traj.program is not None,
            "decode_tokens": timers.n["decode tokens"], "prefill_tokens": timers.n["prefill tokens"],
            "prefill_calls": timers.n["prefill"], "parts": parts, "turns": turns}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--pack", choices=("0", "1", "both"), default="both")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()

    import torch

    from genevolve.config import Settings
    from genevolve.policies.local import LocalPolicy

    from nano_realistic import REQUESTS

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    policy = LocalPolicy.nano(pack=False)
    print(f"model load {time.perf_counter() - t0:.1f} s, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    settings = Settings(offline=True, cache_mode="off", runs_dir=tempfile.mkdtemp(prefix="nano-profile-"),
                        extra={"library_embeddings": False})
    from genevolve.policies.cpu_speed import pack_linears

    variants = {"0": ["as loaded"], "1": ["packed"], "both": ["as loaded", "packed"]}[args.pack]
    rows = []
    for request in REQUESTS[: args.requests]:
        for variant in variants:
            handle = pack_linears(policy.model) if variant == "packed" else None
            try:
                row = run_request(policy, settings, request)
            finally:
                if handle is not None:
                    handle.remove()
            row["variant"] = variant
            row["load_avg"] = os.getloadavg()[0]
            rows.append(row)
            p = row["parts"]
            print(json.dumps({"variant": variant, "wall_s": round(row["wall_s"], 1), "rounds": row["rounds"],
                              "decode_tokens": row["decode_tokens"], "prefill_tokens": row["prefill_tokens"],
                              **{k: round(v, 2) for k, v in p.items()}, "load": round(row["load_avg"], 1)}),
                  flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)
    print()
    print(table(rows, variants))


def table(rows: list[dict], variants: list[str]) -> str:
    head = "| part | " + " | ".join(f"{v}: s (share)" for v in variants) + " |"
    lines = [head, "|---|" + "---|" * len(variants)]
    by = {v: [r for r in rows if r["variant"] == v] for v in variants}
    for part in PARTS:
        cells = []
        for v in variants:
            tot = sum(r["wall_s"] for r in by[v]) or 1e-9
            s = sum(r["parts"][part] for r in by[v])
            cells.append(f"{s:.1f} ({100 * s / tot:.0f}%)")
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    cells = []
    for v in variants:
        rs = by[v]
        dec = sum(r["decode_tokens"] for r in rs)
        dec_s = sum(r["parts"]["decode"] + r["parts"]["lm_head"] for r in rs)
        cells.append(f"{dec} tokens, {1000 * dec_s / max(dec, 1):.0f} ms/token in the model")
    lines.append("| decode tokens | " + " | ".join(cells) + " |")
    cells = []
    for v in variants:
        rs = by[v]
        pre = sum(r["prefill_tokens"] for r in rs)
        cells.append(f"{pre} tokens in {sum(r['prefill_calls'] for r in rs)} calls, "
                     f"{1000 * sum(r['parts']['prefill'] for r in rs) / max(pre, 1):.1f} ms/token")
    lines.append("| prefill tokens | " + " | ".join(cells) + " |")
    lines.append("| median s/request | " + " | ".join(
        f"{statistics.median(r['wall_s'] for r in by[v]):.1f}" for v in variants) + " |")
    if len(variants) == 2:
        a, b = by[variants[0]], by[variants[1]]
        same = sum(x["turns"] == y["turns"] for x, y in zip(a, b))
        lines.append(f"\nsame turns (greedy) in {same} of {len(a)} request pairs; "
                     f"median ratio {variants[1]}/{variants[0]} "
                     f"{statistics.median(y['wall_s'] / x['wall_s'] for x, y in zip(a, b)):.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
