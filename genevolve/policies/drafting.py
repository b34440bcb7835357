"""Prompt-lookup decoding on a cache that already holds the conversation.

A turn of the agent's conversation copies much of what came before it (the request's words, a
tool result's title, the program it was told to correct), so drafts taken from the conversation
itself (no second model) are often right: the last few tokens are looked up earlier in the
sequence, the tokens that followed there are proposed, and one forward pass checks them all.

transformers' own assisted generation does this too, but (5.25) its first step feeds the whole
prompt to the model even when the cache already holds most of it, so the conversation's cache
could not be kept across turns and every drafting turn prefilled the conversation again (about
1 s of a 900-token prompt on two cores). This loop feeds only what the cache lacks. transformers
also runs the logits processors on every drafted position, even after the draft has parted from
the model's choice: the turn grammar was shown text the turn never held, and its lexer ran out of
room on 4 of 36 public requests. This loop stops at the first drafted token not chosen.

Each position's logits go through the same logits processors, in the same order and with the same
prefix, as transformers would call them (the turn grammar follows drafted tokens; LoopStop), then
greedy (or sampled) choices are compared with the draft: the matching prefix and one token more
are kept, the cache is cropped back to them.
"""

from __future__ import annotations

from typing import Sequence


def lookup_draft(seq, max_ngram: int, length: int):
    """The tokens that followed the earliest earlier occurrence of ``seq``'s last n tokens (n from
    ``max_ngram`` down to 1), at most ``length`` of them; an empty tensor when nothing matches."""
    total = seq.shape[0]
    for n in range(min(max_ngram, total - 1), 0, -1):
        windows = seq[: total - 1].unfold(0, n, 1)  # every n-gram that has a token after it
        hits = (windows == seq[total - n:]).all(dim=1).nonzero().flatten()
        if hits.numel():
            start = int(hits[0]) + n
            return seq[start: start + length]
    return seq[:0]


def generate_with_lookup(model, ids, cache, *, draft_tokens: int, max_new_tokens: int, processors=None,
                         stopping=None, streamer=None, temperature: float = 0.0, top_p: float = 1.0,
                         eos_ids: Sequence[int] = (), max_ngram: int = 3) -> dict:
    """Decode one row from ``ids`` (1 × n), the first ``cache.get_seq_length()`` of which the cache
    already holds. Returns what ``LocalPolicy._generate`` returns: sequences, completion, raw logits
    of each kept token, the cache (holding every token but the last)."""
    import torch

    if ids.shape[0] != 1:
        raise ValueError("prompt-lookup decoding decodes one row")
    sampling = temperature > 0
    warpers = []
    if sampling:
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        warpers.append(TemperatureLogitsWarper(temperature))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
    eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=ids.device)
    prompt_len = ids.shape[1]
    seq = ids
    raw: list = []
    if streamer is not None:
        streamer.put(ids.cpu())  # the prompt, which the streamer skips
    feed = ids[:, cache.get_seq_length():]  # what the cache lacks; never empty (the caller keeps one token out)
    while True:
        budget = max_new_tokens - (seq.shape[1] - prompt_len)
        draft = lookup_draft(seq[0], max_ngram, min(draft_tokens, budget - 1)) if budget > 1 else seq[0, :0]
        candidate = torch.cat([seq, draft[None]], dim=1)
        out = model(input_ids=torch.cat([feed, draft[None]], dim=1), cache=cache, use_cache=True,
                    logits_to_keep=draft.shape[0] + 1)
        cache = out.cache if getattr(out, "cache", None) is not None else cache
        logits = out.logits[0, -(draft.shape[0] + 1):].float()
        chosen = []
        for i in range(draft.shape[0] + 1):
            scores = logits[i: i + 1].clone()
            prefix = candidate[:, : seq.shape[1] + i]
            if processors:
                scores = processors(prefix, scores)
            for warp in warpers:
                scores = warp(prefix, scores)
            if sampling:
                token = torch.multinomial(scores.softmax(dim=-1), num_samples=1)[0, 0]
            else:
                token = scores.argmax(dim=-1)[0]
            chosen.append(token)
            if i < draft.shape[0] and token != draft[i]:
                break  # the draft parted here: the positions after it were computed on the wrong token
        kept = torch.stack(chosen)[:budget]
        hit = torch.isin(kept, eos).nonzero().flatten() if eos.numel() else kept[:0]
        if hit.numel():
            kept = kept[: int(hit[0]) + 1]
        # The cache holds the fed tokens and the whole draft; keep the fed ones and the accepted drafts.
        unused = draft.shape[0] - (kept.shape[0] - 1)
        if unused > 0:
            cache.crop(-unused)
        raw.extend(logits[i: i + 1] for i in range(kept.shape[0]))
        seq = torch.cat([seq, kept[None]], dim=1)
        if streamer is not None:
            streamer.put(kept.cpu())
        finished = hit.numel() > 0 or seq.shape[1] - prompt_len >= max_new_tokens
        if stopping is not None and bool(stopping(seq, None).all()):
            finished = True
        if finished:
            break
        feed = seq[:, -1:]
    if streamer is not None:
        streamer.end()
    return {"sequences": seq, "completion": seq[:, prompt_len:], "logits": tuple(raw), "cache": cache}
