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
    assert "Gemma Terms of Use" in card and "| sft |" in card
    # Measured on the public sets against the adapter it replaced, first; no section left as a placeholder.
    assert card.index("## Results on prompt sets written by others") < card.index("## Training")
    assert "| shipped |" in card and "clean_not_copied" in card
    assert "not measured yet" not in card
    # The held-out ablation (with the untuned base) is there, or the card says this run had none.
    held_out = card.split("## Evaluation")[1].split("## Known limits")[0]
    assert "| untuned |" in held_out or "Not run for this adapter" in held_out
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


def _turn_logprob(policy, messages, text) -> float:
    """Mean log-probability per token of ``text`` as the next turn after ``messages``."""
    import torch

    prompt = policy.encode(messages)
    turn = policy.tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + turn], device=policy.model.device)
    with torch.no_grad():
        logp = torch.log_softmax(policy.model(input_ids=ids).logits[0, len(prompt) - 1:-1].float(), -1)
    return float(logp.gather(1, ids[0, len(prompt):, None]).mean())


def test_four_bit_loads_the_adapter_and_speaks_the_protocol(tmp_path):
    """NF4 weights on the CPU with the adapter applied. Every turn is generated under the protocol
    grammar, so every turn parses and the request ends in a program; that the adapter, not the
    grammar, speaks the protocol is checked apart: its first turn needs (almost) no steering by the
    grammar, and the adapter makes that turn far likelier than the NF4 base does."""
    from peft import PeftModel

    from genevolve.policies.grammar import turn_rules
    from genevolve.policies.local import LocalPolicy
    from genevolve.protocol import parse_turn

    policy = LocalPolicy.nano(four_bit=True)
    assert policy.base_warning is None and isinstance(policy.model, PeftModel)
    assert any("4bit" in type(m).__name__.lower() for m in policy.model.modules())
    traj = _run(tmp_path, policy)
    texts = [s.assistant_text for s in traj.steps]
    assert all(parse_turn(t).kind != "error" for t in texts), texts
    # Whether NF4 still researches first is the model's choice (it often answers at once); the turn
    # it writes is a protocol turn either way, and the run ends in a program.
    assert traj.program is not None, (traj.termination, traj.reason, texts)
    assert traj.program.gen_prompt.strip()

    messages = traj.messages[:2]
    policy.reset_cache()
    policy.prepare_turn(turn_rules(None, []))
    first = "".join(policy.stream(messages))
    stats = policy.last_stats
    assert parse_turn(first).kind != "error", first
    print(f"NF4 first turn: {first}")
    assert stats["grammar_interventions"] <= max(3, stats["new_tokens"] // 10), (stats, first)
    tuned = _turn_logprob(policy, messages, first)
    with policy.model.disable_adapter():
        base = _turn_logprob(policy, messages, first)
    print(f"NF4 first turn: {stats}; mean log p per token: adapter {tuned:.2f}, base {base:.2f}")
    assert tuned > base + 1.0, (tuned, base)
