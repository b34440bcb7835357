"""Constrained decoding on the real nano model: per-token time against unconstrained decoding.

Candidates: llguidance (what ``genevolve.policies.grammar`` uses) and xgrammar (its transformers
logits processor), each given the same turn grammar as far as it can express it: xgrammar has no
complement operator, so its gen_prompt cannot refuse "the first reference image" when none was
shown (that rule is left out of its grammar, which makes its task easier, not harder), and it has
no token caps (its free texts are unbounded).

Conversation states are real: a planner trajectory of each request under the nano profile gives
the first turn (a tool call is due) and the turn after the last tool reply (an answer is due, the
shown images known). Each state is decoded greedily by the shipped nano adapter three ways in the
same process, interleaved, ``--repeats`` times; seconds per generated token are compared as a ratio
to unconstrained decoding. "parses" counts turns that ``protocol.parse_turn`` reads.

    pip install xgrammar   # the second candidate (not a requirement of the package)
    python benchmarks/grammar_overhead.py --repeats 1 [--four-bit] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

REQUESTS = [
    'A bakery window with a chalkboard reading "FRESH BREAD" and a paper sign saying "Closed Mondays".',
    "The Sydney Opera House at dawn, two kayaks on the water in front of it.",
]


def xgrammar_ebnf(rules) -> str:
    """The turn grammar in xgrammar's EBNF (same structure; no complement, character caps only)."""
    from genevolve.program import id_number

    def lit(s: str) -> str:
        return json.dumps(s, ensure_ascii=False)

    def string(low: int) -> str:
        return f'"\\"" char{"+" if low else "*"} "\\""'

    lines = ['root ::= "<think>" [^<]* "</think>\\n" action',
             r'char ::= [^"\\\x00-\x1f<] | "\\" ["\\/bfnrt] | "\\u" [0-9a-fA-F]{4}',
             f"text ::= {string(1)}", 'topk ::= ", \\"top_k\\": " [1-9]']
    actions = ["answer"]
    for i, tool in enumerate(() if rules.answer_only else rules.tools):
        head = lit(f'<tool_call>{{"name": {json.dumps(tool)}, "arguments": ')
        if tool == "search":
            body = r'"{\"queries\": [" text (", " text){0,2} "]" topk? "}"'
        elif tool == "image_search":
            body = r'"{\"query\": " text topk? "}"'
        else:
            body = '"{\\"skill_name\\": " (' + " | ".join(lit(json.dumps(s)) for s in rules.skills) + ') "}"'
        lines.append(f"call{i} ::= {head} {body} {lit('}</tool_call>')}")
        actions.append(f"call{i}")
    ids = sorted(dict.fromkeys(rules.image_ids), key=id_number)
    k = min(rules.max_references, len(ids))
    refs = ['"[]"']
    for a in range(len(ids) if k else 0):
        lines.append(f'ref{a} ::= {lit("{" + json.dumps("img_id") + ": " + json.dumps(ids[a]) + ", " + json.dumps("note") + ": ")} {string(0)} "}}"')
        refs.append(f'"[" ref{a} "]"')
        refs += [f'"[" ref{a} ", " ref{b} "]"' for b in range(a + 1, len(ids))] if k >= 2 else []
    lines += ["action ::= " + " | ".join(actions), "refs ::= " + " | ".join(refs),
              f'answer ::= "<answer>{{\\"gen_prompt\\": " {string(1)} '
              f'", \\"reference_images\\": " refs "}}</answer>"']
    return "\n".join(lines) + "\n"


def states(policy_tools):
    """(name, messages, images, rules) for each request: first turn, and the turn an answer is due."""
    import tempfile

    from genevolve.agent import build_agent
    from genevolve.config import Settings
    from genevolve.policies.grammar import turn_rules
    from genevolve.policies.planner import PlannerPolicy

    settings = Settings(offline=True, cache_mode="off", runs_dir=tempfile.mkdtemp(prefix="grammar-bench-"),
                        protocol="nano", extra={"library_embeddings": False})
    agent = build_agent(settings, policy=PlannerPolicy(), offline=True)
    out = []
    for i, request in enumerate(REQUESTS):
        traj = agent.run(request)
        first = traj.messages[:2]
        out.append((f"r{i + 1} first turn", first, [], turn_rules(agent.tools, [])))
        traj.steps = traj.steps[:-1]  # drop the planner's answer: the conversation stops where it was due
        shown = [img.img_id for img in traj.images]
        out.append((f"r{i + 1} after tools", traj.messages, traj.images, turn_rules(agent.tools, shown)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--four-bit", action="store_true", help="the NF4 nano model instead of bf16")
    ap.add_argument("--write", type=Path, help="put the table into this markdown file (its own section)")
    ap.add_argument("--states", type=int, default=2 * len(REQUESTS), help="measure only the first N states")
    ap.add_argument("--from-log", type=Path, help="build the table from the JSON lines a run printed")
    args = ap.parse_args()
    if args.from_log:
        rows = [json.loads(x) for x in args.from_log.read_text(encoding="utf-8").splitlines() if x.startswith("{")]
        _report(_totals(rows), args)
        return

    import torch
    from transformers import DynamicCache

    from genevolve.policies.grammar import max_turn_tokens
    from genevolve.policies.local import LocalPolicy
    from genevolve.protocol import parse_turn

    torch.set_grad_enabled(False)
    policy = LocalPolicy.nano(four_bit=args.four_bit)
    vocab = policy.model.get_output_embeddings().weight.shape[0]
    candidates = ["none", "llguidance"]
    try:
        import xgrammar as xgr
        from xgrammar.contrib.hf import LogitsProcessor as XgrProcessor

        xgr_compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(policy.tokenizer, vocab_size=vocab))
        candidates.append("xgrammar")
    except ImportError:
        print("xgrammar is not installed: measuring llguidance only")
    measured = []
    for name, messages, images, rules in states(None)[: args.states]:
        inputs = policy._inputs(messages, images)
        for rep in range(args.repeats):
            for cand in candidates:
                t0 = time.perf_counter()
                proc = None
                if cand == "llguidance":
                    proc = policy.grammar().processor(rules, rows=1, prompt_len=len(inputs.ids))
                elif cand == "xgrammar":
                    proc = XgrProcessor(xgr_compiler.compile_grammar(xgrammar_ebnf(rules)))
                compile_s = time.perf_counter() - t0
                cap = max_turn_tokens(rules) if proc is not None else 400
                t1 = time.perf_counter()
                out = policy._generate(inputs, DynamicCache(), n=1, max_new_tokens=cap, temperature=0.0,
                                       top_p=1.0, processor=proc)
                seconds = time.perf_counter() - t1
                toks = out["completion"][0].tolist()
                n = out["stopped"].get(0, len(toks))
                text = policy.tokenizer.decode(toks[:n], skip_special_tokens=True)
                ok = parse_turn(text).kind != "error"
                measured.append({"state": name, "rep": rep, "decoder": cand, "tokens": n, "s": round(seconds, 2),
                                 "s_per_token": round(seconds / max(n, 1), 4), "compile_s": round(compile_s, 3),
                                 "parses": ok, "text": text[:160]})
                print(json.dumps(measured[-1], ensure_ascii=False), flush=True)
    _report(_totals(measured), args)


def _totals(measured: list[dict]) -> dict:
    rows: dict = {}
    for m in measured:
        r = rows.setdefault(m["decoder"], {"tokens": 0, "seconds": 0.0, "parses": 0, "turns": 0, "compile_s": []})
        r["tokens"] += m["tokens"]
        r["seconds"] += m["s"]
        r["parses"] += m["parses"]
        r["turns"] += 1
        r["compile_s"].append(m["compile_s"])
    return rows


def _report(rows: dict, args) -> None:
    base = rows["none"]["seconds"] / max(rows["none"]["tokens"], 1)
    model = "NF4" if args.four_bit else "bf16"
    lines = [f"| decoder ({model}) | turns | parse | tokens | ms/token | vs unconstrained | grammar build (median) |",
             "|---|---|---|---|---|---|---|"]
    for cand, r in rows.items():
        per = r["seconds"] / max(r["tokens"], 1)
        lines.append(f"| {cand} | {r['turns']} | {r['parses']}/{r['turns']} | {r['tokens']} | {per * 1000:.1f} | "
                     f"{per / base:.2f}× | {statistics.median(r['compile_s']) * 1000:.0f} ms |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        _write_section(args.write, model, table, args)


def _write_section(path: Path, model: str, table: str, args) -> None:
    import os

    cmd = "python benchmarks/grammar_overhead.py" + (f" --repeats {args.repeats}" if args.repeats != 1 else "") \
        + (f" --states {args.states}" if args.states != 2 * len(REQUESTS) else "") \
        + (" --four-bit" if args.four_bit else "") + f" --write {path}"
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    title = f"### Constrained decoding overhead, nano {model}"
    body = (f"{title}\n\n`{cmd}` (load average at the end: {load}; the machine is shared, so only the ratios "
            f"measured in the same run mean something):\n\n{table}\n")
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if title in text:
        start = text.index(title)
        end = text.find("\n### ", start + len(title))
        text = text[:start] + body + (text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
