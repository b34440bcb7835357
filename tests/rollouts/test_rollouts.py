"""Parallel and grouped rollouts through one Agent, against a real chat server on 127.0.0.1."""

from __future__ import annotations

import threading
import time

import pytest

from helpers.chat_server import ChatServer
from genevolve.agent import Agent, AgentConfig
from genevolve.policies.openai import OpenAIPolicy
from genevolve.protocol import format_answer, format_tool_call
from genevolve.rollouts import leader_first, run_groups, run_many
from genevolve.tools.base import Tool, ToolResult
from genevolve.tools.cache import ToolCache, wrap_with_cache


def first_user_text(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def reply(body: dict) -> str:
    """search -> image_search -> answer, with arguments taken from the request."""
    request = first_user_text(body)
    n = sum(m["role"] == "assistant" for m in body["messages"])
    if n == 0:
        return format_tool_call("search", {"queries": [request]}, think="facts")
    if n == 1:
        return format_tool_call("image_search", {"query": request}, think="a picture")
    return format_answer({"gen_prompt": f"{request}, at dusk.", "reference_images": []}, think="ready")


class Slow(Tool):
    def __init__(self, name: str, delay: float = 0.0):
        self.name, self.delay, self.calls = name, delay, 0
        self._lock = threading.Lock()

    def __call__(self, args, ctx):
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        return ToolResult(text=f"{self.name}: results for {args}")


def make_agent(server, tmp_path, delay=0.0):
    backends = [Slow("search", delay), Slow("image_search", delay)]
    cache = ToolCache(tmp_path / "cache.db")
    tools = wrap_with_cache({t.name: t for t in backends}, cache)
    return Agent(OpenAIPolicy("m", server.base_url, timeout=10), tools, AgentConfig(), work_dir=tmp_path), backends, cache


def test_leader_first_order():
    assert leader_first(3, 2) == [0, 1, 2, 0, 1, 2]
    assert leader_first(1, 3) == [0, 0, 0]


def test_groups_run_leader_first_and_later_rollouts_hit_the_cache(tmp_path):
    prompts = ["a red bicycle", "a blue kite"]
    with ChatServer(reply) as server:
        agent, backends, cache = make_agent(server, tmp_path)
        groups = run_groups(agent, prompts, group_size=3, parallel=1)
        starts = [first_user_text(b) for b in server.requests if not any(m["role"] == "assistant"
                                                                          for m in b["messages"])]
    assert [[t.request for t in g] for g in groups] == [[p] * 3 for p in prompts]
    assert all(t.termination == "answer" for g in groups for t in g)
    assert starts == [prompts[p] for p in leader_first(2, 3)]
    # Only each prompt's first rollout reached the backends.
    assert [b.calls for b in backends] == [2, 2] and cache.hits == 8


def test_a_group_running_at_once_calls_each_backend_once(tmp_path):
    # All six rollouts of one prompt at the same moment: single flight (or, for a late one, the
    # stored answer) means one backend call per distinct question.
    with ChatServer(reply) as server:
        agent, backends, cache = make_agent(server, tmp_path, delay=0.3)
        (group,) = run_groups(agent, ["a lighthouse in fog"], group_size=6, parallel=6)
    assert len(group) == 6 and all(t.termination == "answer" for t in group)
    assert [b.calls for b in backends] == [1, 1]
    texts = {t.steps[0].tool_text for t in group}
    assert len(texts) == 1 and cache.stats()["entries"] == 2


def test_run_many_keeps_order_and_rejects_empty_groups(tmp_path):
    with ChatServer(reply) as server:
        agent, _, _ = make_agent(server, tmp_path)
        trajs = run_many(agent, ["one", "two", "three"], parallel=3)
        assert [t.request for t in trajs] == ["one", "two", "three"]
        with pytest.raises(ValueError, match="group_size"):
            run_groups(agent, ["x"], group_size=0)
