"""A GRPO group rolled out in lock step, keeping the token ids that were sampled.

The G rollouts of one prompt run the real agent loop (``Agent.run``: profile, parsing, tools,
nudges, termination), one thread each, each agent talking to its own ``RolloutSlot``. A slot's
``stream`` does not decode: it hands the slot's context to the ``GroupDecoder`` and waits. The
caller's thread decodes the queued turns of the group as one batch, one token step at a time: a
row whose turn has ended leaves the batch at once (its agent runs the tool call in its thread),
and its next turn joins the running batch as soon as it is queued; a rollout whose agent has ended
leaves the group. Before each step the decoder waits until every live rollout is in the batch or
has queued its turn, so the batches, and with them the samples, are the same on every run.

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


@dataclass(eq=False)  # a request is itself: membership tests are by identity
class _Request:
    slot: RolloutSlot
    text: str | None = None
    error: BaseException | None = None
    done: bool = False


class _Batch:
    """The rows decoding together: their requests, one stacked KV cache (left padded) and masks."""

    def __init__(self):
        self.reqs: list[_Request] = []
        self.cache = None
        self.mask = None  # (rows, columns): 1 on each row's real columns
        self.nxt = None  # each row's next id to feed
        self.pos = None  # its position
        self.turn_ids: list[list[int]] = []
        self.turn_lp: list[list[float]] = []

    @property
    def width(self) -> int:
        return int(self.mask.shape[1]) if self.reqs else 0

    def keep(self, rows: list[int]) -> None:
        import torch

        if not rows:
            self.__init__()
            return
        index = torch.tensor(rows, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.nxt, self.pos = self.mask[index], self.nxt[index], self.pos[index]
        self.reqs = [self.reqs[b] for b in rows]
        self.turn_ids = [self.turn_ids[b] for b in rows]
        self.turn_lp = [self.turn_lp[b] for b in rows]

    def drop(self, reqs: list[_Request]) -> None:
        if reqs:
            self.keep([b for b, r in enumerate(self.reqs) if r not in reqs])


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
        self._stopped: BaseException | None = None  # why the decoding loop ended early
        self.batches: list[int] = []  # the batch size of every decode step (tests and stats read it)
        self.generation_s = 0.0
        self.tokens = 0
        self._eos_ids: set[int] | None = None

    # ------------------------------------------------------------------ the group

    def rollout(self, agents: Sequence, request: str, images: Sequence = ()) -> list[tuple]:
        """Run each agent (each on its own ``RolloutSlot``) on ``request`` in lock step:
        ``[(trajectory, token history)]`` in agent order. The calling thread decodes."""
        slots = [a.policy for a in agents]
        for i, s in enumerate(slots):
            if not isinstance(s, RolloutSlot) or s.decoder is not self or s.index != i:
                raise ValueError("each agent of a group must talk to its own RolloutSlot of this decoder, in order")
            s.reset()
        self._live = set(range(len(agents)))
        self._waiting = {}
        self._stopped = None
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
        try:
            self._serve()
        except BaseException as exc:
            # A second Ctrl-C (KeyboardInterrupt) or any error out of the loop: the rollouts waiting
            # for a turn would wait for ever, and the join below with them. End their turns instead.
            self._stop(exc)
            raise
        finally:
            for t in threads:
                t.join()
        return [(traj, s.history) for traj, s in zip(results, slots)]

    def _stop(self, exc: BaseException) -> None:
        with self._cond:
            self._stopped = exc
            self._cond.notify_all()

    def turn(self, slot: RolloutSlot, messages: list[dict], images: Sequence) -> str:
        """Called from a rollout's thread: queue its next turn, wait until it is decoded, return its text."""
        req = _Request(slot)
        with self._cond:
            try:
                self._add_context(slot, messages, images)
            except Exception as exc:  # noqa: BLE001 - the agent records a policy error
                raise PolicyError(f"{type(exc).__name__}: {exc}") from exc
            self._waiting[slot.index] = req
            self._cond.notify_all()
            while not req.done and self._stopped is None:
                self._cond.wait()
        if not req.done:
            raise PolicyError(f"generation stopped: {type(self._stopped).__name__}")
        if req.error is not None:
            raise PolicyError(f"generation failed: {type(req.error).__name__}: {req.error}")
        return req.text or ""

    def _leave(self, index: int) -> None:
        with self._cond:
            self._live.discard(index)
            self._cond.notify_all()

    def _serve(self) -> None:
        """Decode, one step at a time, the turns of every rollout that is due one.

        Before each step the decoder waits until every live rollout is either in the batch or has
        queued its next turn (a rollout whose turn just ended runs its tool meanwhile), so which
        rows decode together depends on the group's own turns only, never on thread timing: a
        run is reproducible. A rollout whose turn is queued joins the running batch at once
        rather than waiting for the slowest row of a round."""
        import torch

        batch = _Batch()
        with self._cond, torch.no_grad():
            while True:
                while len(batch.reqs) + len(self._waiting) < len(self._live):
                    self._cond.wait()
                if not self._live and not batch.reqs and not self._waiting:
                    return
                t0 = time.perf_counter()
                done: list[_Request] = []
                if self._waiting:
                    joining = [self._waiting.pop(i) for i in sorted(self._waiting)]
                    try:
                        if self.policy.is_image_text:  # one row at a time: rotary positions per row's images
                            for r in joining:
                                r.text = self._decode_alone(r.slot)
                            done += joining
                        else:
                            self._join(batch, joining)
                    except Exception as exc:  # noqa: BLE001 - these rollouts end with the error
                        for r in joining:
                            r.error = exc
                        done += [r for r in joining if r not in done]
                        batch.drop([r for r in joining if r in batch.reqs])
                if batch.reqs:
                    try:
                        done += self._step(batch)
                    except Exception as exc:  # noqa: BLE001 - every row of the batch ends with the error
                        for r in batch.reqs:
                            r.error = exc
                        done += batch.reqs
                        batch.drop(list(batch.reqs))
                self.generation_s += time.perf_counter() - t0
                for r in done:
                    r.done = True
                if done:
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

    def _turn_ended(self, slot: RolloutSlot, ids: list[int]) -> bool:
        """Whether the turn ``ids`` (sampled so far for ``slot``) is complete: an end-of-turn id or a
        closing tag (``</tool_call>``, ``</answer>``) at its tail."""
        if ids and ids[-1] in self._eos():
            return True
        tail = self.policy.tokenizer.decode(ids[-self.window:], skip_special_tokens=False)
        return any(s in tail for s in TURN_END_STRINGS)

    # ------------------------------------------------------------------ decoding

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

    def _join(self, batch: "_Batch", reqs: list[_Request]) -> None:
        """Bring the rows' caches up to their histories and add them to the batch (left padded)."""
        import torch
        from transformers import DynamicCache

        device = self.policy.model.device
        slots = [r.slot for r in reqs]
        # The rollouts of a group share their prompt: prefill it once for all.
        first = [s for s in slots if s.cache is None]
        if len(first) > 1 and all(s.history.ids == first[0].history.ids for s in first):
            self._extend(first[0])
            for s in first[1:]:
                s.cache, s.cached = first[0].cache, first[0].cached
        for s in slots:
            self._extend(s)
        old = batch.cache.layers if batch.reqs else []
        width = max([batch.width] + [s.cached for s in slots])

        def padded(t, pad):
            return torch.cat([t.new_zeros(*t.shape[:-2], pad, t.shape[-1]), t], dim=-2) if pad else t

        layers = []
        for l in range(len(slots[0].cache)):
            ks = [padded(s.cache[l][0], width - s.cached) for s in slots]
            vs = [padded(s.cache[l][1], width - s.cached) for s in slots]
            if old:  # rows already decoding: widen them on the left when a longer row joins
                ks.insert(0, padded(old[l].keys, width - batch.width))
                vs.insert(0, padded(old[l].values, width - batch.width))
            layers.append((torch.cat(ks), torch.cat(vs)))
        batch.cache = DynamicCache(ddp_cache_data=layers)
        mask = torch.zeros(len(slots), width, dtype=torch.long, device=device)
        for b, s in enumerate(slots):
            mask[b, width - s.cached:] = 1
        if batch.reqs:
            left = torch.zeros(len(batch.reqs), width - batch.width, dtype=torch.long, device=device)
            mask = torch.cat([torch.cat([left, batch.mask], dim=1), mask])
        batch.mask = mask
        nxt = torch.tensor([s.history.ids[-1] for s in slots], dtype=torch.long, device=device)
        pos = torch.tensor([s.cached for s in slots], dtype=torch.long, device=device)
        batch.nxt = torch.cat([batch.nxt, nxt]) if batch.reqs else nxt
        batch.pos = torch.cat([batch.pos, pos]) if batch.reqs else pos
        batch.reqs += reqs
        batch.turn_ids += [[] for _ in reqs]
        batch.turn_lp += [[] for _ in reqs]

    def _step(self, batch: "_Batch") -> list[_Request]:
        """One decode step for every row of the batch; the rows whose turn ended leave it."""
        import torch

        model = self.policy.model
        device = model.device
        self.batches.append(len(batch.reqs))
        batch.mask = torch.cat([batch.mask, torch.ones(len(batch.reqs), 1, dtype=torch.long, device=device)], dim=1)
        out = model(input_ids=batch.nxt.unsqueeze(1), attention_mask=batch.mask, position_ids=batch.pos.unsqueeze(1),
                    cache=batch.cache, use_cache=True)
        tokens, logp = self._pick(out.logits[:, -1, :])
        keep, finished = [], []
        for b, req in enumerate(batch.reqs):
            ids, slot = batch.turn_ids[b], req.slot
            ids.append(int(tokens[b]))
            batch.turn_lp[b].append(float(logp[b]))
            fed = slot.cached + len(ids)  # this row's real columns in the cache (the newest id is not fed yet)
            if self._turn_ended(slot, ids) or len(ids) >= self.max_new_tokens:
                slot.cache = [(layer.keys[b:b + 1, :, -fed:].clone(), layer.values[b:b + 1, :, -fed:].clone())
                              for layer in batch.cache.layers]
                slot.cached = fed
                req.text = self._finish_turn(slot, ids, batch.turn_lp[b])
                finished.append(req)
            else:
                keep.append(b)
        batch.nxt, batch.pos = tokens, batch.pos + 1
        if finished:
            batch.keep(keep)
        return finished

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
