"""Lock-step group rollouts: the real agent loop for every rollout, one batched decode per turn,
and token histories that hold exactly the ids that were sampled."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM = str(REPO / "configs" / "data" / "tiny_system.md")

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tiny_policy(tiny_gemma_path):
    import torch

    from genevolve.policies.local import LocalPolicy

    policy = LocalPolicy.load(str(tiny_gemma_path), name="tiny", max_new_tokens=20, temperature=0.0,
                              constrained=False, dtype=torch.float32)
    policy.explicit_sampling = {"temperature", "top_p", "max_new_tokens"}
    return policy


def _group(policy, n: int, *, temperature: float, top_p: float = 1.0, max_new_tokens: int = 20, decoder_cls=None):
    from genevolve.agent import Agent, AgentConfig
    from genevolve.training.group_rollout import GroupDecoder, RolloutSlot

    decoder = (decoder_cls or GroupDecoder)(policy, temperature=temperature, top_p=top_p,
                                            max_new_tokens=max_new_tokens)
    config = AgentConfig(max_rounds=3, system_prompt_path=SYSTEM)
    return decoder, [Agent(RolloutSlot(decoder, i), {}, config) for i in range(n)]


def _runs(mask: list[int]) -> list[tuple[int, int, int]]:
    """Maximal runs ``(value, start, end)`` of a 0/1 mask."""
    if not mask:
        return []
    out, start = [], 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            out.append((mask[start], start, i))
            start = i
    return out


def test_lock_step_rollouts_match_sequential_ones_under_greedy(tiny_policy):
    from genevolve.agent import Agent, AgentConfig

    sequential = Agent(tiny_policy, {}, AgentConfig(max_rounds=3, system_prompt_path=SYSTEM)).run("draw a red cat")
    decoder, agents = _group(tiny_policy, 3, temperature=0.0)
    results = decoder.rollout(agents, "draw a red cat")
    assert len(results) == 3
    for traj, history in results:
        assert traj.termination == sequential.termination
        assert [s.kind for s in traj.steps] == [s.kind for s in sequential.steps]
        assert [s.reply for s in traj.steps] == [s.reply for s in sequential.steps]
        assert traj.steps[0].assistant_text == sequential.steps[0].assistant_text
        assert history.prompt_ids == tiny_policy.encode(sequential.messages[:2])


class RecordingDecoder:
    """Records every id the sampler drew; the first rollout's turns end after 5 tokens, so its next
    turn joins a batch whose other rows are still writing (rows at different turns, left padded)."""

    @staticmethod
    def make():
        from genevolve.training.group_rollout import GroupDecoder

        class Recording(GroupDecoder):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                self.drawn: list[list[int]] = []
                self.turn_of: list[dict[int, int]] = []

            def _pick(self, logits):
                tokens, logp = super()._pick(logits)
                self.drawn.append(tokens.tolist())
                return tokens, logp

            def _turn_ended(self, slot, ids):
                return (slot.index == 0 and len(ids) >= 5) or super()._turn_ended(slot, ids)

            def _step(self, batch):  # which turn each row of this step is writing
                self.turn_of.append({r.slot.index: sum(v == 1 for v, _, _ in _runs(r.slot.history.env_mask))
                                     for r in batch.reqs})
                return super()._step(batch)

        return Recording


def test_histories_hold_the_sampled_ids_and_their_sampling_logprobs(tiny_policy):
    import torch
    from transformers import TopPLogitsWarper

    torch.manual_seed(3)
    decoder, agents = _group(tiny_policy, 4, temperature=0.7, top_p=0.9, max_new_tokens=30,
                             decoder_cls=RecordingDecoder.make())
    results = decoder.rollout(agents, "draw a red cat")
    tok = tiny_policy.tokenizer
    sampled_turns = []
    for traj, h in results:
        assert len(h.completion_ids) == len(h.env_mask) == len(h.logprobs) == len(h.decision_mask)
        # Every policy token's log-prob is the model's, under the sampling distribution, given exactly
        # this history: one full forward pass over prompt + completion reproduces them.
        with torch.no_grad():
            logits = tiny_policy.model(input_ids=torch.tensor([h.ids])).logits[0].float() / 0.7
        logp = torch.log_softmax(TopPLogitsWarper(0.9)(None, logits), dim=-1)
        P = len(h.prompt_ids)
        for j, (t, m, lp) in enumerate(zip(h.completion_ids, h.env_mask, h.logprobs)):
            if m:
                assert abs(float(logp[P + j - 1, t]) - lp) < 1e-4
            else:
                assert lp == 0.0
        runs = _runs(h.env_mask)
        turns = [h.completion_ids[a:b] for v, a, b in runs if v == 1]
        assert len(turns) == len(traj.steps)  # one sampled run per turn the agent took
        for step, ids in zip(traj.steps, turns):
            assert tok.decode(ids, skip_special_tokens=True).startswith(step.assistant_text)
        sampled_turns.append(turns)
        # env_mask is 0 exactly on the context between turns: the end of turn, the runtime's reply
        # and the next turn's header, as the chat template writes them.
        for v, a, b in runs:
            if v == 0:
                text = tok.decode(h.completion_ids[a:b], skip_special_tokens=False)
                assert text.endswith("<start_of_turn>model\n") and "<start_of_turn>user\n" in text
                assert traj.steps[0].reply in text
    # The turns hold the ids the sampler drew, no more and no fewer.
    flat = sorted(t for turns in sampled_turns for turn in turns for t in turn)
    assert flat == sorted(t for draw in decoder.drawn for t in draw)


def test_rows_leave_the_batch_when_their_turn_or_rollout_ends(tiny_policy):
    import torch

    import dataclasses

    torch.manual_seed(5)
    decoder, agents = _group(tiny_policy, 4, temperature=1.0, max_new_tokens=30, decoder_cls=RecordingDecoder.make())
    agents[3].config = dataclasses.replace(agents[3].config, max_rounds=1)  # this rollout ends after one turn
    results = decoder.rollout(agents, "draw a red cat")
    assert len(results[3][0].steps) == 1 and all(len(t.steps) == 2 for t, _ in results[:3])
    sampled = sum(sum(h.env_mask) for _, h in results)
    # A decode step carries exactly the rows still writing their turn: no padding rows, and the
    # ended rollout takes no part after its turn.
    assert sum(decoder.batches) == sampled
    first_round = max(len(results[3][1].completion_ids), 1)
    assert max(decoder.batches) == 4 and max(decoder.batches[first_round:]) <= 3
    # A second turn joins the running batch when it is queued, not after the round's slowest row:
    # rollout 0 writes its second turn while the others still write their first.
    assert any(step.get(0) == 1 and 0 in step.values() for step in decoder.turn_of)
    assert decoder.tokens == sampled


def test_a_second_ctrl_c_mid_decode_ends_the_group_instead_of_hanging(tiny_policy):
    """A second SIGTERM/Ctrl-C raises KeyboardInterrupt in the decoding thread. It used to leave the
    rollout threads waiting for their turn for ever, and the join after them: a killed GRPO run hung
    until SIGKILL. Now every waiting turn ends with a policy error and the interrupt goes on up."""
    import threading

    from genevolve.training.group_rollout import GroupDecoder

    class Interrupted(GroupDecoder):
        steps = 0

        def _step(self, batch):
            Interrupted.steps += 1
            if Interrupted.steps == 3:
                raise KeyboardInterrupt
            return super()._step(batch)

    decoder, agents = _group(tiny_policy, 3, temperature=1.0, decoder_cls=Interrupted)
    raised: list[BaseException] = []

    def run():
        try:
            decoder.rollout(agents, "draw a red cat")
        except BaseException as exc:  # noqa: BLE001 - the test reads what came out
            raised.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the group rollout hung after an interrupt"
    assert len(raised) == 1 and isinstance(raised[0], KeyboardInterrupt)
