"""Local policy speed and memory on the real Gemma 3 270M (the ``nano`` base), measured side by side.

    python benchmarks/local_policy.py [--out docs/bench/local_policy.md]

1. A 4-round trajectory (our system prompt, a request, three tool responses of realistic length),
   greedy, with KV reuse vs re-prefilling the whole conversation every round.
2. Memory of the 4-bit NF4 load vs the bf16 load (parameter bytes, and process RSS growth measured
   in a fresh subprocess each).
3. Streaming tokens/s and time to the first delta.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REQUEST = ('A 1990s travel-magazine cover of two backpackers in front of the Eiffel Tower, title "PARIS" '
           "in bold serif, warm late-afternoon light.")
TOOL_RESPONSES = [
    "<tool_response>\n" + "\n".join(
        f"[{i}] Eiffel Tower — wrought-iron lattice tower on the Champ de Mars in Paris, completed in 1889 "
        f"for the World's Fair; 330 m tall; photographed most often from the Trocadéro at golden hour "
        f"(result {i} of 6)." for i in range(1, 7)) + "\n</tool_response>",
    "<tool_response>\n" + "\n".join(
        f"IMG_00{i}: travel magazine cover, 1990s print, saturated film colours, masthead across the top, "
        f"two figures with rucksacks, grain and halftone texture (source {i})." for i in range(1, 5))
    + "\n</tool_response>",
    "<tool_response>\nSkill text_rendering: keep the requested words short and exact; give the typeface "
    "family, weight and placement; name the text once in quotes; avoid asking for extra captions, "
    "signatures or watermarks; for magazine covers put the masthead in the top third and leave the "
    "subject's face clear of type. " * 3 + "\n</tool_response>",
]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(kind: str) -> None:
    """Run in a subprocess: load one way, print bytes of parameters and RSS growth as JSON."""
    import torch  # noqa: F401 - imported before the baseline so torch's own RSS is not counted

    from genevolve.policies.local import LocalPolicy

    before = _rss_mb()
    t0 = time.perf_counter()
    policy = LocalPolicy.nano(four_bit=(kind == "4bit"))
    load_s = time.perf_counter() - t0
    print(json.dumps({"kind": kind, "footprint_mb": policy.model.get_memory_footprint() / 2**20,
                      "rss_growth_mb": _rss_mb() - before, "load_s": load_s}))


def _conversation(policy, rounds: int, new_tokens: int):
    """Run `rounds` rounds; each adds the generated turn and a tool response. Returns (seconds, outputs)."""
    from genevolve.protocol import load_system_prompt

    messages = [{"role": "system", "content": load_system_prompt()}, {"role": "user", "content": REQUEST}]
    policy.max_new_tokens = new_tokens
    policy.reset_cache()
    outputs, prompt_tokens, prefilled = [], [], []
    t0 = time.perf_counter()
    for rnd in range(rounds):
        text = "".join(policy.stream(messages))
        outputs.append(text)
        prompt_tokens.append(policy.last_stats["prompt_tokens"])
        prefilled.append(policy.last_stats["prompt_tokens"] - policy.last_stats["reused_tokens"])
        if rnd < rounds - 1:
            messages += [{"role": "assistant", "content": text},
                         {"role": "user", "content": TOOL_RESPONSES[rnd % len(TOOL_RESPONSES)]}]
    return time.perf_counter() - t0, outputs, prompt_tokens, prefilled


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "local_policy.md"))
    ap.add_argument("--memory-child", choices=["bf16", "4bit"])
    ap.add_argument("--new-tokens", type=int, default=24)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return

    import torch

    from genevolve.policies.local import LocalPolicy

    results: dict = {"torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
    t0 = time.perf_counter()
    policy = LocalPolicy.nano()
    results["load_s"] = time.perf_counter() - t0
    results["dtype"] = str(policy.model.dtype)

    # 4. streaming (also warms up kernels before the timed comparisons)
    policy.max_new_tokens = 48
    policy.reset_cache()
    msgs = [{"role": "system", "content": "You plan images."}, {"role": "user", "content": REQUEST}]
    t0 = time.perf_counter()
    first = None
    n_deltas = 0
    for _ in policy.stream(msgs):
        first = first or time.perf_counter() - t0
        n_deltas += 1
    total = time.perf_counter() - t0
    results["stream"] = {"new_tokens": policy.last_stats["new_tokens"], "deltas": n_deltas, "seconds": total,
                         "first_delta_s": first, "tok_per_s": policy.last_stats["new_tokens"] / total}

    # 1. KV reuse vs re-prefill, 4 rounds, greedy
    policy.kv_reuse = False
    full_s, full_out, prompts, full_pref = _conversation(policy, 4, args.new_tokens)
    policy.kv_reuse = True
    reuse_s, reuse_out, _, reuse_pref = _conversation(policy, 4, args.new_tokens)
    results["kv"] = {"reprefill_s": full_s, "reuse_s": reuse_s, "speedup": full_s / reuse_s,
                     "prompt_tokens": prompts, "prefilled_reprefill": full_pref, "prefilled_reuse": reuse_pref,
                     "same_text": full_out == reuse_out}

    del policy

    # 3. memory, each load in its own process
    mem = {}
    for kind in ("bf16", "4bit"):
        out = subprocess.run([sys.executable, __file__, "--memory-child", kind], capture_output=True, text=True,
                             check=True)
        mem[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    results["memory"] = mem
    results["memory"]["footprint_ratio"] = mem["4bit"]["footprint_mb"] / mem["bf16"]["footprint_mb"]
    results["memory"]["rss_ratio"] = mem["4bit"]["rss_growth_mb"] / mem["bf16"]["rss_growth_mb"]

    print(json.dumps(results, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(_report(results, args))


def _report(r: dict, args) -> str:
    kv, mem, st = r["kv"], r["memory"], r["stream"]
    return f"""# Local policy (Gemma 3 270M base, `nano`) — speed and memory

Command: `python benchmarks/local_policy.py` (greedy for the trajectory, {args.new_tokens} new tokens per
round; dtype {r['dtype']}, {r['torch_threads']} torch threads). Measured on the 2-core CPU
machine (load average printed below the table when it matters): absolute times are noisy, the
ratios are measured side by side in the same run.

| measurement | baseline | ours | ratio |
|---|---|---|---|
| 4-round trajectory, end to end | re-prefill every round: {kv['reprefill_s']:.1f} s | KV reuse: {kv['reuse_s']:.1f} s | **{kv['speedup']:.2f}×** faster (target ≥ 1.5×) |
| model memory (parameter bytes) | bf16: {mem['bf16']['footprint_mb']:.0f} MiB | 4-bit NF4: {mem['4bit']['footprint_mb']:.0f} MiB | **{mem['footprint_ratio']:.2f}** |
| process RSS growth on load | bf16: {mem['bf16']['rss_growth_mb']:.0f} MiB | 4-bit NF4: {mem['4bit']['rss_growth_mb']:.0f} MiB | {mem['rss_ratio']:.2f} |
| streaming | — | {st['tok_per_s']:.1f} tok/s, first delta after {st['first_delta_s']:.2f} s ({st['deltas']} deltas for {st['new_tokens']} tokens) | — |

Trajectory detail: prompt tokens per round {kv['prompt_tokens']}; tokens prefilled per round with
re-prefill {kv['prefilled_reprefill']} vs with reuse {kv['prefilled_reuse']}. Same greedy text
both ways: {kv['same_text']}. Group decoding (GRPO's lock-step rollouts) is measured by
`benchmarks/grpo_step.py`. Load times: bf16 {mem['bf16']['load_s']:.1f} s, 4-bit
{mem['4bit']['load_s']:.1f} s (from the cached HF copy of the GGUF file).

The 4-bit RSS includes bitsandbytes' own import and the bf16 weights it reads before quantising,
so the parameter-bytes ratio is the figure to compare; the embedding matrix (262k × 640 ≈ 168M of the
270M parameters) stays in bf16 under NF4, which bounds the ratio for this model.
"""


if __name__ == "__main__":
    main()
