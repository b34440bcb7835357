"""SDL: the top-k decision mask, the guide buffer and gate, the distiller, and the KL going down."""

from __future__ import annotations

import math

import pytest


# One torch thread: the trainers' tests compare runs step by step, and two cores are shared.
pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def embedder():
    from genevolve.embeddings import text_embedder

    return text_embedder()  # the real all-MiniLM-L6-v2 from PyPI, offline


def _guide(i: int, trigger: str, summary: str, created_at: float | None = None) -> dict:
    from genevolve.training.sdl import guide_from_json

    g = guide_from_json({"retrieval_key": {"trigger": trigger, "summary": summary},
                         "decision_guidance": {"tool_plan": [f"plan {i}"], "program_writing": ["say it"]}})
    g["created_at"] = created_at if created_at is not None else 1000.0 + i
    return g


def test_topk_mask_keeps_exactly_the_largest_gaps_among_decision_tokens():
    import torch

    from genevolve.training.sdl import topk_decision_mask

    n = 30
    student = torch.zeros(n)
    teacher = torch.zeros(n)
    decision = torch.zeros(n, dtype=torch.bool)
    decision[5:25] = True  # 20 decision tokens -> keep ceil(0.1 * 20) = 2
    gaps = {7: 3.0, 12: -5.0, 20: 1.0, 22: 2.5}
    for i, g in gaps.items():
        teacher[i] = g
    teacher[2] = 9.0  # the largest gap of all, but outside the decision span: never kept
    keep = topk_decision_mask(student, teacher, decision, 0.1)
    assert keep.nonzero().flatten().tolist() == [7, 12]
    # 25% of the decision tokens -> 5: the four gaps above, then the earliest tie (index 5).
    keep = topk_decision_mask(student, teacher, decision, 0.25)
    assert keep.nonzero().flatten().tolist() == [5, 7, 12, 20, 22]
    # Few decision tokens still keep one; none keeps none.
    one = torch.zeros(n, dtype=torch.bool)
    one[20] = True
    assert topk_decision_mask(student, teacher, one, 0.1).nonzero().flatten().tolist() == [20]
    assert not topk_decision_mask(student, teacher, torch.zeros(n, dtype=torch.bool), 0.1).any()


def test_buffer_evicts_the_oldest_at_capacity(tmp_path, embedder):
    from genevolve.store import Store
    from genevolve.training.sdl import GuideBuffer

    buffer = GuideBuffer(Store(tmp_path / "g.db"), embedder, capacity=3)
    for i in range(5):
        buffer.add(_guide(i, f"trigger {i}", f"summary {i}"))
    kept = buffer.store.list_guides()
    assert [g["trigger"] for g in kept] == ["trigger 2", "trigger 3", "trigger 4"]
    assert len(buffer) == 3 and all(len(g["embedding"]) == 384 * 4 for g in kept)


def test_gate_rejects_a_guide_below_threshold(tmp_path, embedder):
    import numpy as np

    from genevolve.store import Store
    from genevolve.training import retrieve_guide
    from genevolve.training.sdl import GuideBuffer, guide_key_text

    store = Store(tmp_path / "g.db")
    buffer = GuideBuffer(store, embedder)
    g = _guide(0, "requests for travel posters of paris",
               "A 1990s travel-magazine cover of two backpackers in front of the Eiffel Tower, title PARIS")
    buffer.add(g)
    buffer.add(_guide(1, "requests for counting apples", "Exactly five green apples on a wooden table"))

    near = "A 1990s travel magazine cover: two backpackers in front of the Eiffel Tower with the title PARIS"
    guide, cos, passes = retrieve_guide(near, store, model=embedder)
    assert guide["trigger"] == g["trigger"] and passes and cos >= 0.84
    far = "a watercolor of a lighthouse in a storm at night"
    guide, cos, passes = retrieve_guide(far, store, model=embedder)
    expected = float(embedder([far])[0] @ embedder([guide_key_text(guide)])[0])
    assert math.isclose(cos, expected, abs_tol=1e-5)
    assert cos < 0.84 and not passes  # the best match exists but does not pass the gate
    # A stricter gate rejects even the near request.
    _, cos_near, passes_strict = retrieve_guide(near, store, model=embedder, gate=0.999)
    assert not passes_strict and cos_near < 0.999
    assert np.isclose(np.linalg.norm(embedder(["x"])[0]), 1.0, atol=1e-5)


def test_contrastive_distiller_names_what_the_better_rollout_did():
    from genevolve.program import Program
    from genevolve.training.rewards import Reward
    from genevolve.training.sdl import GUIDE_KINDS, ContrastiveDistiller, as_decision_guide
    from genevolve.trajectory import Step, Trajectory

    request = 'a poster of the Eiffel Tower with the title "PARIS"'
    best = Trajectory(request=request, termination="answer", steps=[
        Step(round=1, kind="tool_call", tool_name="search", tool_arguments={"queries": ["Eiffel Tower 1990s poster"]}),
        Step(round=2, kind="tool_call", tool_name="query_knowledge", tool_arguments={"skill_name": "text_rendering"}),
        Step(round=3, kind="answer")],
        program=Program(gen_prompt='A travel poster of the Eiffel Tower, bold serif title "PARIS" at the top'))
    worst = Trajectory(request=request, termination="format_error", steps=[
        Step(round=1, kind="format_error", error="no <tool_call> or <answer> block after </think>")])
    guide = ContrastiveDistiller()(request, best, worst, Reward(0.9, info={}),
                                   Reward(0.0, info={"findings": ["no program"]}))
    shaped = as_decision_guide(guide)
    assert set(shaped["decision_guidance"]) == set(GUIDE_KINDS)
    assert all(shaped["decision_guidance"][k] for k in GUIDE_KINDS)
    text = " ".join(b for k in GUIDE_KINDS for b in guide["guidance"][k])
    assert "search -> query_knowledge" in text and "Eiffel Tower 1990s poster" in text
    assert "text_rendering" in text and '"PARIS"' in text and "format error" in text
    assert math.isclose(guide["reward_gap"], 0.9)
    assert "eiffel" in guide["trigger"] and guide["summary"].startswith("a poster")


def test_masked_reverse_kl_falls_with_a_guide_injected(tmp_path):
    import torch

    from genevolve.training.data import ConversationEncoder
    from genevolve.training.modeling import ModelConfig, load_for_training
    from genevolve.training.sdl import guide_from_json, sdl_loss, with_guide

    model, tok, proc = load_for_training(ModelConfig(name="tiny:gemma3"))
    enc = ConversationEncoder(tok, proc)
    guide = guide_from_json({"retrieval_key": {"trigger": "red cat", "summary": "draw a red cat"},
                             "decision_guidance": {"program_writing": ["write the red cat in the gen_prompt"]}})
    batch = []
    for colour, noun in (("red", "cat"), ("blue", "dog")):
        messages = [{"role": "system", "content": "write the answer"},
                    {"role": "user", "content": f"draw a {colour} {noun}"},
                    {"role": "assistant", "content": f'<think>plan</think><answer>{{"gen_prompt": "a {colour} {noun} '
                                                     f'with a bold title", "reference_images": []}}</answer>'}]
        batch.append((enc.encode(messages), enc.encode(with_guide(messages, guide))))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    kls = []
    for _ in range(12):
        opt.zero_grad()
        terms = [sdl_loss(model, s, t, fraction=0.1) for s, t in batch]
        assert all(t.kept == math.ceil(0.1 * t.decision_tokens) for t in terms)
        loss = sum(t.loss for t in terms) / len(terms)
        loss.backward()
        opt.step()
        kls.append(sum(t.kl for t in terms) / len(terms))
    assert kls[0] > 0.01
    assert kls[-1] < 0.5 * kls[0], kls


def test_llm_distiller_speaks_chat_completions_and_falls_back(tmp_path):
    import json

    from helpers.chat_server import ChatServer

    from genevolve.training.rewards import Reward
    from genevolve.training.sdl import LLMDistiller
    from genevolve.trajectory import Trajectory

    replies = [json.dumps({"retrieval_key": {"trigger": "landmark travel posters", "summary": "Eiffel poster"},
                           "decision_guidance": {"tool_plan": ["Search the landmark first."],
                                                 "failure_defenses": ["Never skip the title."]}}),
               "sorry, I cannot help with that"]
    with ChatServer(lambda body: replies[min(len(server.requests) - 1, 1)]) as server:
        seen = server.requests
        distiller = LLMDistiller(f"openai:guide-writer@{server.base_url}", max_retries=0)
        best = Trajectory(request="an Eiffel Tower poster", termination="answer")
        worst = Trajectory(request="an Eiffel Tower poster", termination="format_error")
        guide = distiller("an Eiffel Tower poster", best, worst, Reward(1.0), Reward(0.0))
        assert guide["trigger"] == "landmark travel posters" and guide["meta"]["distiller"] == "llm"
        assert guide["guidance"]["tool_plan"] == ["Search the landmark first."]
        assert seen[0]["model"] == "guide-writer" and "an Eiffel Tower poster" in seen[0]["messages"][1]["content"]
        fallback = distiller("an Eiffel Tower poster", best, worst, Reward(1.0), Reward(0.0))
        assert fallback["meta"]["distiller"] == "contrastive" and "llm_error" in fallback["meta"]


def test_guide_buffer_and_image_search_share_one_embedder(tmp_path, embedder):
    """A GRPO+SDL run loads all-MiniLM-L6-v2 once: the buffer, by any name of the default model,
    and the image library's ranking hold the same object."""
    from genevolve.embeddings import text_embedder
    from genevolve.store import Store
    from genevolve.tools.image_search import shared_embedder
    from genevolve.training.sdl import GuideBuffer

    store = Store(tmp_path / "g.db")
    for name in (None, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert GuideBuffer(store, name).embed.resolve() is embedder
    assert shared_embedder() is embedder is text_embedder()
    buffer = GuideBuffer(store)
    buffer.add(_guide(1, "eiffel tower posters", "a poster of the Eiffel Tower at night"))
    guide, cosine, passes = buffer.retrieve("eiffel tower posters. a poster of the Eiffel Tower at night")
    assert guide["trigger"] == "eiffel tower posters" and passes and cosine > 0.999  # its own key text
