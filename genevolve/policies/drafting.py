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

A turn also repeats what the policy wrote in earlier conversations (its thinking's closing line, the
guidance a skill taught it): ``DraftMemory`` keeps those turns, and a longer match there wins. On
the 36 public requests this took a forward pass from 2.1 kept tokens to 5.9 (12-token drafts).

Each position's logits go through the same logits processors, in the same order and with the same
prefix, as transformers would call them (the turn grammar follows drafted tokens; LoopStop), then
greedy (or sampled) choices are compared with the draft: the matching prefix and one token more
are kept, the cache is cropped back to them.
"""

from __future__ import annotations

from typing import Sequence


def lookup_draft(seq, max_ngram: int, length: int, memory: "DraftMemory | None" = None):
    """The tokens that followed the earliest earlier occurrence of ``seq``'s last n tokens (n from
    ``max_ngram`` down to 1), at most ``length`` of them; an empty tensor when nothing matches.
    With a ``memory``, a longer n-gram found among the turns written before wins."""
    import torch

    n, draft = _conversation_draft(seq, max_ngram, length)
    if memory is not None and length > 0:
        remembered = memory.draft(seq[-memory.max_ngram:].tolist(), length, longer_than=n)
        if remembered:
            return torch.tensor(remembered, dtype=seq.dtype, device=seq.device)
    return draft


def _conversation_draft(seq, max_ngram: int, length: int):
    total = seq.shape[0]
    for n in range(min(max_ngram, total - 1), 0, -1):
        windows = seq[: total - 1].unfold(0, n, 1)  # every n-gram that has a token after it
        hits = (windows == seq[total - n:]).all(dim=1).nonzero().flatten()
        if hits.numel():
            start = int(hits[0]) + n
            return n, seq[start: start + length]
    return 0, seq[:0]


class DraftMemory:
    """The token ids of turns this policy wrote before, in any conversation: drafts for what a
    turn says that its own conversation never did. A tuned policy repeats itself across requests
    (the closing line of its thinking, the sentences a skill taught it, the program's JSON keys)
    and none of that is in a new conversation until the turn writes it. Replaying the 168 turns
    of the 36 public requests (``benchmarks/draft_replay.py``), 12-token drafts from the
    conversation alone kept 2.2 tokens a forward pass; with the earlier requests' turns, 6.0.

    Each n-gram (n up to ``max_ngram``) points after its earliest occurrence that has a token after
    it in the same turn; a draft never runs past the end of the turn it came from. When the memory
    passes ``max_tokens`` its older half is dropped."""

    def __init__(self, max_tokens: int = 16384, max_ngram: int = 4):
        self.max_tokens = max_tokens
        self.max_ngram = max_ngram
        self.turns: list[list[int]] = []
        self._after: dict[tuple, tuple[int, int]] = {}  # n-gram -> (turn, position after it)

    def __len__(self) -> int:
        return sum(len(t) for t in self.turns)

    def add(self, ids) -> None:
        ids = [int(i) for i in ids]
        if not ids or len(ids) > self.max_tokens:
            return
        if len(self) + len(ids) > self.max_tokens:
            kept, total = [], 0
            for turn in reversed(self.turns):  # the newer half stays
                if total + len(turn) > self.max_tokens // 2:
                    break
                kept.insert(0, turn)
                total += len(turn)
            self.turns, self._after = [], {}
            for turn in kept:
                self._index(turn)
        self._index(ids)

    def _index(self, ids: list[int]) -> None:
        t = len(self.turns)
        self.turns.append(ids)
        for n in range(1, self.max_ngram + 1):
            for i in range(len(ids) - n):
                self._after.setdefault(tuple(ids[i: i + n]), (t, i + n))

    def draft(self, tail: list[int], length: int, *, longer_than: int = 0) -> list[int]:
        """What followed the longest n-gram ending ``tail`` (longer than ``longer_than``), at most
        ``length`` tokens; empty when none."""
        for n in range(min(self.max_ngram, len(tail)), longer_than, -1):
            hit = self._after.get(tuple(tail[-n:]))
            if hit is not None:
                turn, start = hit
                return self.turns[turn][start: start + length]
        return []


def generate_with_lookup(model, ids, cache, *, draft_tokens: int, max_new_tokens: int, processors=None,
                         stopping=None, streamer=None, temperature: float = 0.0, top_p: float = 1.0,
                         eos_ids: Sequence[int] = (), max_ngram: int = 3, memory: DraftMemory | None = None) -> dict:
    """Decode one row from ``ids`` (1 × n), the first ``cache.get_seq_length()`` of which the cache
    already holds; drafts come from the sequence and, if given, the ``memory`` of earlier turns.
    Returns what ``LocalPolicy._generate`` returns: sequences, completion, raw logits of each kept
    token, the cache (holding every token but the last), and the number of forward passes."""
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
    passes = 0
    while True:
        budget = max_new_tokens - (seq.shape[1] - prompt_len)
        draft = lookup_draft(seq[0], max_ngram, min(draft_tokens, budget - 1), memory) if budget > 1 else seq[0, :0]
        candidate = torch.cat([seq, draft[None]], dim=1)
        out = model(input_ids=torch.cat([feed, draft[None]], dim=1), cache=cache, use_cache=True,
                    logits_to_keep=draft.shape[0] + 1)
        passes += 1
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
    return {"sequences": seq, "completion": seq[:, prompt_len:], "logits": tuple(raw), "cache": cache,
            "passes": passes}
