"""What the studio shows for nano: its model card in Backends, and tokens per second while a local
model streams (counted by the policy, on a tiny real model)."""

from __future__ import annotations

from genevolve.policies.local import LocalPolicy


def test_local_policy_counts_streamed_tokens(tiny_gemma_path):  # noqa: F811 - fixture from conftest
    policy = LocalPolicy.load(str(tiny_gemma_path), max_new_tokens=24)
    messages = [{"role": "system", "content": "You plan images."}, {"role": "user", "content": "a red apple"}]
    seen = []
    for _delta in policy.stream(messages):
        seen.append(dict(policy.live_stats))
    assert seen, "the tiny model produced no text"
    final = policy.live_stats
    assert final["tokens"] == policy.last_stats["new_tokens"] > 1
    assert final["tokens_per_s"] is not None and final["tokens_per_s"] > 0
    assert [s["tokens"] for s in seen] == sorted(s["tokens"] for s in seen)  # only ever grows


def test_the_agents_text_events_carry_the_token_counts(tiny_gemma_path, tmp_path):
    """The studio's status line reads tokens and tok/s off the events, not off the policy."""
    from genevolve.agent import Agent, AgentConfig

    policy = LocalPolicy.load(str(tiny_gemma_path), max_new_tokens=16)
    agent = Agent(policy, [], AgentConfig(max_rounds=1), work_dir=tmp_path)
    deltas = [e for e in agent.stream("a red apple") if e.type == "text_delta"]
    assert deltas and all(e.stats.get("tokens", 0) >= 1 for e in deltas[1:])
    assert deltas[-1].stats["tokens"] >= deltas[0].stats.get("tokens", 0)


def test_backends_show_the_nano_card(tmp_path, monkeypatch):
    from app import generate_tab
    from genevolve.policies import local

    monkeypatch.setattr(local, "NANO_ADAPTER_DIR", tmp_path)
    assert "No trained nano adapter" in generate_tab.nano_card_text()
    assert "no trained adapter is installed" in generate_tab.policy_hint("nano")
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "README.md").write_text("---\nlicense: gemma\n---\n\n# GenEvolve-Nano\n\n| sft | 95% |\n")
    assert generate_tab.nano_card_text() == "# GenEvolve-Nano\n\n| sft | 95% |"
    assert "no trained adapter" not in generate_tab.policy_hint("nano")
    assert "GenEvolve-Nano" in generate_tab.policy_hint("nano?4bit=1")
