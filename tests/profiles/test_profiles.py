"""Protocol profiles: the compact nano conversation, chosen by config or by the policy, recorded."""

from __future__ import annotations

import pytest

from genevolve.agent import Agent, AgentConfig
from genevolve.config import Settings
from genevolve.policies.planner import PlannerPolicy
from genevolve.profiles import PROFILES, ProfileError, get_profile
from genevolve.tools import build_tools

REQUEST = 'A travel poster of the Eiffel Tower at dusk, title "PARIS" in bold serif'


def _run(tmp_path, protocol=None, policy=None):
    settings = Settings(offline=True, extra={"library_embeddings": False}, runs_dir=str(tmp_path / "runs"),
                        cache_path=str(tmp_path / "cache.db"))
    tools = build_tools(settings, offline=True)
    agent = Agent(policy or PlannerPolicy(), tools, AgentConfig(protocol=protocol), work_dir=tmp_path / "runs")
    return agent.run(REQUEST)



def test_nano_profile_sends_the_compact_conversation(tmp_path):
    full = _run(tmp_path / "a")
    nano = _run(tmp_path / "b", protocol="nano")
    assert full.meta["protocol"] == "genevolve" and nano.meta["protocol"] == "nano"
    assert nano.messages[0]["content"] == get_profile("nano").system_prompt()
    assert len(nano.messages[0]["content"]) < len(full.messages[0]["content"]) / 1.5
    both = {}
    for traj in (full, nano):
        both[traj.meta["protocol"]] = {s.tool_name + str(s.tool_arguments): s.tool_text for s in traj.steps
                                       if s.kind == "tool_call"}
    # The same teacher makes the same calls; the nano replies are shorter, never longer.
    assert both["genevolve"].keys() == both["nano"].keys()
    for call, text in both["nano"].items():
        assert len(text) <= len(both["genevolve"][call]), call
    search = next(t for c, t in both["nano"].items() if c.startswith("search"))
    assert "(source:" not in search and search.count("\n1. ") + search.count("\n2. ") >= 1
    assert "\n3. " not in search  # at most two hits per query
    skill = next(t for c, t in both["nano"].items() if c.startswith("query_knowledge"))
    assert skill.startswith("text_rendering:") and len(skill) < 400
    assert full.program is not None and nano.program is not None


def test_a_policy_may_prefer_a_profile_and_config_overrides_it(tmp_path):
    policy = PlannerPolicy()
    policy.preferred_protocol = "nano"
    assert _run(tmp_path / "a", policy=policy).meta["protocol"] == "nano"
    assert _run(tmp_path / "b", protocol="genevolve", policy=policy).meta["protocol"] == "genevolve"


def test_unknown_profile_names_the_valid_ones():
    with pytest.raises(ProfileError, match="genevolve, nano"):
        get_profile("compactest")
    assert get_profile(None) is PROFILES["genevolve"]


def test_the_tool_cache_keeps_profiles_apart(tmp_path):
    settings = Settings(offline=True, extra={"library_embeddings": False}, runs_dir=str(tmp_path / "runs"),
                        cache_path=str(tmp_path / "cache.db"))
    tools = build_tools(settings, offline=True)
    first = Agent(PlannerPolicy(), tools, AgentConfig(protocol="nano"), work_dir=tmp_path / "r").run(REQUEST)
    second = Agent(PlannerPolicy(), tools, AgentConfig(), work_dir=tmp_path / "r").run(REQUEST)
    nano_search = next(s.tool_text for s in first.steps if s.tool_name == "search")
    full_search = next(s.tool_text for s in second.steps if s.tool_name == "search")
    assert nano_search != full_search and "(source:" in full_search


def test_a_new_dialect_changes_the_conversation_without_touching_the_loop_or_the_tools(tmp_path):
    """A profile owns its differences: overriding its methods is all a new conversation takes."""
    from dataclasses import dataclass

    from genevolve.profiles import Profile

    @dataclass(frozen=True)
    class Brief(Profile):
        def request_message(self, request, user_images):
            return "Request: " + request

        def is_final_round(self, rnd, tool_calls, max_rounds, max_tool_calls):
            return tool_calls >= 2 or rnd == max_rounds  # a budget of two tool calls

        def answer_tool(self, tool, args, ctx):
            result = tool.answer(args, ctx)
            result.text = result.text.splitlines()[0]  # the first line of every reply
            return result

    traj = _run(tmp_path, protocol=Brief("brief", "system.md"))
    assert traj.meta["protocol"] == "brief" and traj.messages[1]["content"] == "Request: " + REQUEST
    calls = [s for s in traj.steps if s.kind == "tool_call"]
    assert len(calls) == 2 and all("\n" not in s.tool_text for s in calls)
    assert traj.termination in ("answer", "forced_answer") and traj.program is not None
