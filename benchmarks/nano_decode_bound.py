"""nano's decode speed against what this machine's memory bandwidth allows.

One-token decoding of a 270M model reads every weight once per token, and the tied 262,144 x 640
embedding whole (the lm_head multiplies it with the last hidden state), so its ceiling is

    bound tokens/s = memory read bandwidth / bytes read per token

This script measures, in one run:

* the read bandwidth: ``sum()`` over a 1 GiB fp32 tensor (streams it once; best and median of 5),
  with torch's threads;
* the bytes per token: the weights of the loaded model as they are stored (bf16 on CPUs with
  AVX512-BF16, the LoRA adapter in its own dtype), each tied tensor once, plus the KV cache read
  at the measured context length;
* greedy decoding of ~128 new tokens (KV cache; the prompt prefilled first and not timed) on a real
  conversation state where an answer is due, unconstrained and under the turn grammar, with the
  linears as loaded and packed for oneDNN (``genevolve.policies.cpu_speed``), interleaved;

and prints tokens/s, the ratio measured / bound and whether packing kept the tokens.

    python benchmarks/nano_decode_bound.py [--repeats 2] [--new-tokens 128] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def read_bandwidth(gib: float = 1.0, repeats: int = 5) -> dict:
    """GB/s of ``sum()`` over a large fp32 tensor (one streaming read, little arithmetic)."""
    import torch

    x = torch.ones(int(gib * 2**30) // 4, dtype=torch.float32)
    x.sum()  # touch the pages first
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t)
    nbytes = x.numel() * 4
    del x
    return {"best_gb_s": nbytes / min(times) / 1e9, "median_gb_s": nbytes / statistics.median(times) / 1e9}


def weight_bytes(model) -> dict:
    """Bytes of the weights one decoded token reads, by kind (tied tensors counted once)."""
    seen, out = set(), {"embedding/lm_head": 0, "other weights": 0, "adapter": 0}
    head = model.get_output_embeddings().weight
    dtypes = set()
    for name, p in model.named_parameters():
        key = (p.data_ptr(), p.numel())
        if key in seen:
            continue
        seen.add(key)
        nbytes = p.numel() * p.element_size()
        dtypes.add(str(p.dtype).replace("torch.", ""))
        if p.data_ptr() == head.data_ptr():
            out["embedding/lm_head"] += nbytes
        elif "lora_" in name:
            out["adapter"] += nbytes
        else:
            out["other weights"] += nbytes
    out["dtypes"] = sorted(dtypes)
    out["head_shape"] = list(head.shape)
    out["head_dtype"] = str(head.dtype).replace("torch.", "")
    return out


class TokenClock:
    """A generate() streamer that only notes when each new token arrives."""

    def __init__(self):
        self.times: list[float] = []
        self._prompt = True

    def put(self, value):
        if self._prompt:  # generate() first puts the prompt
            self._prompt = False
            return
        self.times.append(time.perf_counter())

    def end(self):
        pass


def decode_once(policy, inputs, rules, new_tokens: int, constrained: bool) -> dict:
    import torch
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.no_grad():
        policy.model(input_ids=torch.tensor([inputs.ids[:-1]]), cache=cache, use_cache=True, logits_to_keep=1)
        proc = policy.grammar().processor(rules, rows=1, prompt_len=len(inputs.ids)) if constrained else None
        clock = TokenClock()
        out = policy._generate(inputs, cache, max_new_tokens=new_tokens, temperature=0.0, top_p=1.0,
                               streamer=clock, processor=proc)
    n = out["stopped"].get(0, out["completion"].shape[1])
    tokens = out["completion"][0, :n].tolist()
    # The first token's time holds generate()'s set-up; the rate counts the tokens after it.
    steps = len(clock.times) - 1
    rate = steps / (clock.times[-1] - clock.times[0]) if steps > 0 else float("nan")
    return {"tokens": tokens, "tokens_per_s": rate, "kv_bytes": _cache_bytes(out["cache"])}


def _cache_bytes(cache) -> int:
    total = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is not None and hasattr(t, "numel"):
                total += t.numel() * t.element_size()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()

    import torch

    from genevolve.policies.cpu_speed import pack_linears
    from genevolve.policies.local import LocalPolicy

    from grammar_overhead import states

    if args.threads:
        torch.set_num_threads(args.threads)
    bw = read_bandwidth()
    print(f"read bandwidth {bw['best_gb_s']:.1f} GB/s best, {bw['median_gb_s']:.1f} median "
          f"({torch.get_num_threads()} threads)", flush=True)
    policy = LocalPolicy.nano(pack=False)
    wb = weight_bytes(policy.model)
    name, messages, images, rules = states(None)[1]  # request 1, after its tools: an answer is due
    inputs = policy._inputs(messages, images)
    print(f"state: {name}, {len(inputs.ids)} prompt tokens; weights {json.dumps(wb)}", flush=True)

    rows = []
    for rep in range(args.repeats):
        for packed in (False, True):
            handle = pack_linears(policy.model) if packed else None
            try:
                for constrained in (False, True):
                    r = decode_once(policy, inputs, rules, args.new_tokens, constrained)
                    r.update(packed=packed, constrained=constrained, rep=rep, load=os.getloadavg()[0])
                    rows.append(r)
                    print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()
                                      if k != "tokens"} | {"n": len(r["tokens"])}), flush=True)
            finally:
                if handle is not None:
                    handle.remove()

    weights = wb["embedding/lm_head"] + wb["other weights"] + wb["adapter"]
    kv = statistics.median(r["kv_bytes"] for r in rows)
    per_token = weights + kv
    bound = bw["best_gb_s"] * 1e9 / per_token
    print(f"\nbytes per token: {per_token / 1e6:.0f} MB = lm_head/embedding {wb['embedding/lm_head'] / 1e6:.0f} MB "
          f"({'x'.join(map(str, wb['head_shape']))} {wb['head_dtype']}) + other weights "
          f"{wb['other weights'] / 1e6:.0f} MB + adapter {wb['adapter'] / 1e6:.1f} MB + KV cache {kv / 1e6:.1f} MB")
    print(f"bound: {bw['best_gb_s']:.1f} GB/s / {per_token / 1e6:.0f} MB = {bound:.1f} tokens/s "
          f"(median bandwidth: {bw['median_gb_s'] * 1e9 / per_token:.1f})\n")
    print("| linears | decoding | new tokens | tokens/s (median) | measured / bound | same tokens as unpacked |")
    print("|---|---|---|---|---|---|")
    for packed in (False, True):
        for constrained in (False, True):
            rs = [r for r in rows if r["packed"] == packed and r["constrained"] == constrained]
            ref = [r for r in rows if not r["packed"] and r["constrained"] == constrained]
            same = all(r["tokens"] == ref[0]["tokens"] for r in rs)
            rate = statistics.median(r["tokens_per_s"] for r in rs)
            print(f"| {'packed (oneDNN)' if packed else 'as loaded'} | {'grammar' if constrained else 'free'} | "
                  f"{len(rs[0]['tokens'])} | {rate:.2f} | {rate / bound:.2f} | {'yes' if same else 'NO'} |")
    loads = [r["load"] for r in rows]
    print(f"\nload average during the run {min(loads):.1f}–{max(loads):.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
