"""The shipped GenEvolve-Nano adapter on the real Gemma 3 270M (slow: loads the real model).

A held-out request (an entity and a wording the adapter never trained on) must end in a valid
program that keeps the request's quoted text verbatim; the model card must state what was measured.
"""

from __future__ import annotations

import pytest

from genevolve.policies.local import NANO_ADAPTER_DIR

pytestmark = pytest.mark.slow

# From the eval split of `genevolve train nano` (seed 0): neither this entity nor this request was trained on.
HELD_OUT = 'Product photo of a fountain pen floating against a pastel backdrop, its label reading "KITE & CO" in clean lettering.'


def test_the_adapter_and_its_card_are_shipped():
    assert (NANO_ADAPTER_DIR / "adapter_config.json").is_file()
    size = (NANO_ADAPTER_DIR / "adapter_model.safetensors").stat().st_size
    assert 1_000_000 < size < 40_000_000, size  # small enough to commit
    card = (NANO_ADAPTER_DIR / "README.md").read_text(encoding="utf-8")
    assert "Gemma Terms of Use" in card and "| untuned |" in card and "| sft |" in card
    assert "not measured yet" not in card.split("## Evaluation")[1].split("## Known limits")[0]
    # Its provenance names no machine path, and its hash is the hash of the weights beside it.
    import hashlib
    import json

    source = json.loads((NANO_ADAPTER_DIR / "SOURCE.json").read_text(encoding="utf-8"))
    assert not source["checkpoint_in_run"].startswith(("/", "runs/"))
    weights = (NANO_ADAPTER_DIR / "adapter_model.safetensors").read_bytes()
    assert source["adapter_model_sha256"] == hashlib.sha256(weights).hexdigest()


def _run(tmp_path, policy):
    from genevolve.agent import build_agent
    from genevolve.config import Settings

    settings = Settings(offline=True, cache_mode="off", runs_dir=str(tmp_path / "runs"),
                        extra={"library_embeddings": False})
    return build_agent(settings, policy=policy, offline=True).run(HELD_OUT)


def test_held_out_request_ends_in_a_program_with_its_quoted_text(tmp_path):
    from genevolve.policies.local import LocalPolicy

    policy = LocalPolicy.nano()
    assert policy.base_warning is None  # the shipped adapter was found: no "untrained base" warning
    traj = _run(tmp_path, policy)
    assert traj.meta["protocol"] == "nano"
    assert traj.program is not None, (traj.termination, traj.reason, [s.assistant_text for s in traj.steps])
    assert traj.termination in ("answer", "forced_answer")
    assert "KITE & CO" in traj.program.gen_prompt
    assert traj.program.text_constraints() == ["KITE & CO"]


def test_four_bit_loads_the_adapter_and_speaks_the_protocol(tmp_path):
    """NF4 weights on the CPU: the adapter is applied and the first turn is the adapter's tool-call
    pattern. NF4 often breaks the format after that (a closing tag cut short, a malformed answer),
    so whole-request success under NF4 is neither asserted nor claimed: see the model card."""
    from peft import PeftModel

    from genevolve.policies.local import LocalPolicy

    policy = LocalPolicy.nano(four_bit=True)
    assert policy.base_warning is None and isinstance(policy.model, PeftModel)
    first = _run(tmp_path, policy).steps[0].assistant_text
    assert first.startswith("<think>") and '<tool_call>{"name": "' in first, first
