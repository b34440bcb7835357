"""A GRPO group rolled out in lock step, keeping the token ids that were sampled.

The G rollouts of one prompt run the real agent loop (``Agent.run``: profile, parsing, tools,
nudges, termination), one thread each, each agent talking to its own ``RolloutSlot``. A slot's
``stream`` does not decode: it hands the slot's context to the ``GroupDecoder`` and waits. Once
every live rollout of the group is waiting, the decoder decodes all their next turns as one batch
and wakes them; a rollout whose agent has ended leaves the group, and a row whose turn has ended
leaves the batch at once. Tool calls run between turns in the rollouts' own threads.

Each slot keeps its token history: the prompt ids, then per turn the ids the model sampled (with
their log-probs under the sampling distribution: the config's temperature and top_p) and the ids
of the context up to the next turn (end of turn, tool response, next turn header), tokenised from
the chat template's text after the last turn (``LocalPolicy.encode_after_last_turn``). A turn is
conditioned on exactly that history, never on a re-rendering of earlier turns, so a trainer fed
``TokenHistory`` trains on exactly what was sampled.

Text-only models decode as one batch with a KV cache per rollout, kept across turns (only the new
context is prefilled) and stacked with left padding for the batch. Image-text models decode
their rows one after another on the same token histories (their rotary positions depend on each
row's images).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

from genevolve.policies.base import PolicyBase, PolicyError
from genevolve.protocol import TURN_END_STRINGS, truncate_at_turn_end

_DECISION_RE = re.compile(r"<tool_call>(.*?)</tool_call>|<answer>(.*?)</answer>", re.DOTALL)


@dataclass
class TokenHistory:
    """One rollout as the model saw and wrote it, in token ids."""

    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)  # sampled turns and the context between them
    env_mask: list[int] = field(default_factory=list)  # 1: sampled by the policy; 0: context
    logprobs: list[float] = field(default_factory=list)  # sampling log-prob of each sampled token; 0.0 on context
    decision_mask: list[int] = field(default_factory=list)  # 1: inside a <tool_call>/<answer> body of a turn
    prompt_messages: list[dict] = field(default_factory=list)  # the opening (system, request) the prompt renders
    vision: dict = field(default_factory=dict)  # image-text models: pixel_values, image_grid_thw of all its images

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.completion_ids

    def add_context(self, ids: list[int]) -> None:
        self.completion_ids += ids
        self.env_mask += [0] * len(ids)
        self.logprobs += [0.0] * len(ids)
        self.decision_mask += [0] * len(ids)

    def add_turn(self, ids: list[int], logprobs: list[float], decision: list[int]) -> None:
        self.completion_ids += ids
        self.env_mask += [1] * len(ids)
        self.logprobs += list(logprobs)
        self.decision_mask += decision


class RolloutSlot(PolicyBase):
    """The policy one rollout of a group talks to: its turns come from the group's batched decode."""

    def __init__(self, decoder: "GroupDecoder", index: int):
        self.decoder = decoder
        self.index = index
        self.name = decoder.policy.name
        self.preferred_protocol = decoder.policy.preferred_protocol
        self.history = TokenHistory()
        self.cache = None  # per layer (keys, values) of history ids[:cached]; text-only models
        self.cached = 0
        self.extra: dict = {}  # image-text models: the processor's tensors of the history's images
        self._last_stats: dict = {}

    def reset(self) -> None:
        self.history = TokenHistory()
        self.cache, self.cached, self.extra = None, 0, {}

    def stream(self, messages: list[dict], images: Sequence = ()):
        text = self.decoder.turn(self, messages, images)
        if text:
            yield text

    def stats(self) -> dict:
        return dict(self._last_stats)


@dataclass
class _Request:
    slot: RolloutSlot
    text: str | None = None
    error: BaseException | None = None
    done: bool = False


class GroupDecoder:
    """Decodes the turns of a group's rollouts as one batch (see the module docstring)."""

    def __init__(self, policy, *, temperature: float, top_p: float, max_new_tokens: int, window: int = 12):
        self.policy = policy  # a LocalPolicy: its model, tokenizer, chat template and encoders
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.window = window  # tokens decoded at the tail of a turn to spot its end string
        self._cond = threading.Condition()
        self._live: set[int] = set()
        self._waiting: dict[int, _Request] = {}
        self.batches: list[int] = []  # the batch size of every decode step (tests and stats read it)
        self.generation_s = 0.0
        self.tokens = 0
        self._eos_ids: set[int] | None = None

    # ------------------------------------------------------------------ the group

    def rollout(self, agents: Sequence, request: str, images: Sequence = ()) -> list[tuple]:
        """Run each agent (each on its own ``RolloutSlot``) on ``request`` in lock step:
        ``[(trajectory, token history)]`` in agent order."""
        slots = [a.policy for a in agents]
        for i, s in enumerate(slots):
            if not isinstance(s, RolloutSlot) or s.decoder is not self or s.index != i:
                raise ValueError("each agent of a group must talk to its own RolloutSlot of this decoder, in order")
            s.reset()
        self._live = set(range(len(agents)))
        self._waiting = {}
        results: list = [None] * len(agents)

        def run(i: int) -> None:
            try:
                results[i] = agents[i].run(request, images)
            finally:
                self._leave(i)

        threads = [threading.Thread(target=run, args=(i,), name=f"rollout-{i}", daemon=True)
                   for i in range(len(agents))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [(traj, s.history) for traj, s in zip(results, slots)]

    def turn(self, slot: RolloutSlot, messages: list[dict], images: Sequence) -> str:
        """Called from a rollout's thread: queue its next turn, wait for the batch, return the turn's text."""
        req = _Request(slot)
        with self._cond:
            try:
                self._add_context(slot, messages, images)
            except Exception as exc:  # noqa: BLE001 - the agent records a policy error
                raise PolicyError(f"{type(exc).__name__}: {exc}") from exc
            self._waiting[slot.index] = req
            self._maybe_decode()
            while not req.done:
                self._cond.wait()
        if req.error is not None:
            raise PolicyError(f"generation failed: {type(req.error).__name__}: {req.error}")
        return req.text or ""

    def _leave(self, index: int) -> None:
        with self._cond:
            self._live.discard(index)
            self._maybe_decode()

    def _maybe_decode(self) -> None:
        """With the lock held: once every live rollout waits for its turn, decode them all."""
        if not self._waiting or len(self._waiting) < len(self._live):
            return
        batch = [self._waiting[i] for i in sorted(self._waiting)]  # slot order: runs are reproducible
        self._waiting = {}
        t0 = time.perf_counter()
        try:
            texts = self._decode([r.slot for r in batch])
            for r, text in zip(batch, texts):
                r.text = text
        except Exception as exc:  # noqa: BLE001 - every waiting rollout ends with the error
            for r in batch:
                r.error = exc
        self.generation_s += time.perf_counter() - t0
        for r in batch:
            r.done = True
        self._cond.notify_all()

    # ------------------------------------------------------------------ token histories

    def _add_context(self, slot: RolloutSlot, messages: list[dict], images: Sequence) -> None:
        """The ids the slot's next turn is conditioned on: the prompt, or the context since its last turn."""
        policy, h = self.policy, slot.history
        if not h.prompt_ids:
            inputs = policy._inputs(messages, images)
            h.prompt_ids = list(inputs.ids)
            h.prompt_messages = [dict(m) for m in messages]
        else:
            inputs = policy.encode_after_last_turn(messages, images)
            ids = list(inputs.ids)
            sampled = h.completion_ids
            # A turn that ended on the end-of-turn token already holds the marker the template adds.
            if ids and sampled and h.env_mask[-1] and ids[0] == sampled[-1] and ids[0] in self._eos():
                ids = ids[1:]
            h.add_context(ids)
        if policy.is_image_text and inputs.extra:
            import torch

            for key in ("pixel_values", "image_grid_thw"):
                if key in inputs.extra:
                    old = slot.extra.get(key)
                    slot.extra[key] = inputs.extra[key] if old is None else torch.cat([old, inputs.extra[key]])
            h.vision = {k: v for k, v in slot.extra.items()}

    def _eos(self) -> set[int]:
        """The ids that end a turn: the model's end-of-sequence ids and the tokenizer's."""
        if self._eos_ids is None:
            tok = self.policy.tokenizer
            self._eos_ids = {i for i in (*self.policy._eos_ids(), getattr(tok, "eos_token_id", None))
                             if i is not None}
        return self._eos_ids

    def _finish_turn(self, slot: RolloutSlot, ids: list[int], logprobs: list[float]) -> str:
        tok = self.policy.tokenizer
        text = tok.decode(ids, skip_special_tokens=True)
        slot.history.add_turn(ids, logprobs, self._decision_mask(ids))
        slot._last_stats = {"tokens": len(ids)}
        self.tokens += len(ids)
        return truncate_at_turn_end(text)

    def _decision_mask(self, ids: list[int]) -> list[int]:
        """1 on the tokens of a turn that lie inside a <tool_call> or <answer> body (where SDL acts)."""
        tok = self.policy.tokenizer
        ends, text = [], ""
        for k in range(1, len(ids) + 1):  # character offset where each token's text ends
            text = tok.decode(ids[:k], skip_special_tokens=False)
            ends.append(len(text))
        spans = []
        for m in _DECISION_RE.finditer(text):
            g = 1 if m.group(1) is not None else 2
            spans.append((m.start(g), m.end(g)))
        mask, start = [], 0
        for end in ends:
            mask.append(int(any(a < end and start < b for a, b in spans) and end > start))
            start = end
        return mask

    def _turn_ended(self, ids: list[int]) -> bool:
        if ids and ids[-1] in self._eos():
            return True
        tail = self.policy.tokenizer.decode(ids[-self.window:], skip_special_tokens=False)
        return any(s in tail for s in TURN_END_STRINGS)

    # ------------------------------------------------------------------ decoding

    def _decode(self, slots: list[RolloutSlot]) -> list[str]:
        import torch

        with torch.no_grad():
            if self.policy.is_image_text:
                return [self._decode_alone(s) for s in slots]
            return self._decode_batch(slots)

    def _pick(self, logits):
        """Next tokens from raw logits ``(B, V)`` and their log-probs under the sampling distribution."""
        import torch

        logits = logits.float()
        if self.temperature > 0:
            scores = logits / self.temperature
            if self.top_p < 1.0:
                from transformers import TopPLogitsWarper

                scores = TopPLogitsWarper(self.top_p)(None, scores)
            logp = torch.log_softmax(scores, dim=-1)
            tokens = torch.multinomial(logp.exp(), 1).squeeze(-1)
        else:  # greedy: the log-probs of the model's own distribution
            logp = torch.log_softmax(logits, dim=-1)
            tokens = logp.argmax(-1)
        return tokens, logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    def _extend(self, slot: RolloutSlot) -> None:
        """Prefill the slot's history but its last id into the slot's own cache (only what is new)."""
        import torch
        from transformers import DynamicCache

        ids = slot.history.ids
        new = ids[slot.cached:-1]
        if not new:
            return
        model = self.policy.model
        device = model.device
        cache = DynamicCache(ddp_cache_data=slot.cache) if slot.cache is not None else DynamicCache()
        x = torch.tensor([new], dtype=torch.long, device=device)
        pos = torch.arange(slot.cached, slot.cached + len(new), device=device).unsqueeze(0)
        model(input_ids=x, attention_mask=torch.ones(1, len(ids) - 1, dtype=torch.long, device=device),
              position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
        slot.cache = [(layer.keys, layer.values) for layer in cache.layers]
        slot.cached = len(ids) - 1

    def _decode_batch(self, slots: list[RolloutSlot]) -> list[str]:
        import torch
        from transformers import DynamicCache

        model = self.policy.model
        device = model.device
        # The rollouts of a group share their prompt: prefill it once for all.
        first = [s for s in slots if s.cache is None]
        if len(first) > 1 and all(s.history.ids == first[0].history.ids for s in first):
            self._extend(first[0])
            for s in first[1:]:
                s.cache, s.cached = first[0].cache, first[0].cached
        for s in slots:
            self._extend(s)
        width = max(s.cached for s in slots)
        layers = []
        for l in range(len(slots[0].cache)):
            ks, vs = [], []
            for s in slots:
                k, v = s.cache[l]
                pad = width - k.shape[-2]
                if pad:
                    k = torch.cat([k.new_zeros(*k.shape[:-2], pad, k.shape[-1]), k], dim=-2)
                    v = torch.cat([v.new_zeros(*v.shape[:-2], pad, v.shape[-1]), v], dim=-2)
                ks.append(k)
                vs.append(v)
            layers.append((torch.cat(ks), torch.cat(vs)))
        cache = DynamicCache(ddp_cache_data=layers)
        mask = torch.zeros(len(slots), width, dtype=torch.long, device=device)
        for b, s in enumerate(slots):
            mask[b, width - s.cached:] = 1
        rows = list(range(len(slots)))  # batch row -> slot position
        nxt = torch.tensor([s.history.ids[-1] for s in slots], dtype=torch.long, device=device)
        pos = torch.tensor([s.cached for s in slots], dtype=torch.long, device=device)
        turn_ids: list[list[int]] = [[] for _ in slots]
        turn_lp: list[list[float]] = [[] for _ in slots]
        texts: list[str | None] = [None] * len(slots)
        for _ in range(self.max_new_tokens):
            self.batches.append(len(rows))
            mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=torch.long, device=device)], dim=1)
            out = model(input_ids=nxt.unsqueeze(1), attention_mask=mask, position_ids=pos.unsqueeze(1),
                        cache=cache, use_cache=True)
            tokens, logp = self._pick(out.logits[:, -1, :])
            keep = []
            for b, i in enumerate(rows):
                turn_ids[i].append(int(tokens[b]))
                turn_lp[i].append(float(logp[b]))
                fed = slots[i].cached + len(turn_ids[i])  # this row's real columns in the cache
                if self._turn_ended(turn_ids[i]) or len(turn_ids[i]) >= self.max_new_tokens:
                    slots[i].cache = [(layer.keys[b:b + 1, :, -fed:].clone(), layer.values[b:b + 1, :, -fed:].clone())
                                      for layer in cache.layers]
                    texts[i] = self._finish_turn(slots[i], turn_ids[i], turn_lp[i])
                    slots[i].cached = fed  # the last sampled id is fed with the next context
                else:
                    keep.append(b)
            if not keep:
                break
            if len(keep) < len(rows):  # a row whose turn ended leaves the batch
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, tokens, pos = mask[index], tokens[index], pos[index]
                rows = [rows[b] for b in keep]
            nxt, pos = tokens, pos + 1
        return [t or "" for t in texts]

    def _decode_alone(self, slot: RolloutSlot) -> str:
        """An image-text model's turn: the whole history (with its images) through ``generate``."""
        import torch
        from transformers import DynamicCache

        from genevolve.policies.local import _Inputs

        policy = self.policy
        ids = slot.history.ids
        extra = dict(slot.extra)
        image_token = getattr(policy.processor, "image_token_id", None)
        if image_token is not None:
            extra["mm_token_type_ids"] = torch.tensor([[int(t == image_token) for t in ids]], dtype=torch.long)
        vision_mask = [t == image_token for t in ids] if image_token is not None else None
        out = policy._generate(_Inputs(ids=list(ids), extra=extra, vision_mask=vision_mask), DynamicCache(),
                               max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p)
        completion = out["completion"][0]
        length = out["stopped"].get(0, completion.shape[0])
        toks = completion[:length].tolist()
        self.batches.extend([1] * len(toks))
        logprobs = []
        for step, t in enumerate(toks):  # the sampling distribution's log-prob, from the raw logits
            logits = out["logits"][step][0].float()
            if self.temperature > 0:
                scores = logits / self.temperature
                if self.top_p < 1.0:
                    from transformers import TopPLogitsWarper

                    scores = TopPLogitsWarper(self.top_p)(None, scores.unsqueeze(0))[0]
            else:
                scores = logits
            logprobs.append(float(torch.log_softmax(scores, dim=-1)[t]))
        return self._finish_turn(slot, toks, logprobs)
