"""The openai policy against a real chat-completions server on 127.0.0.1 (tests/helpers/chat_server.py)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from helpers.chat_server import ChatServer, Reply
from genevolve.agent import Agent, AgentConfig
from genevolve.policies import make_policy
from genevolve.policies.base import PolicyError
from genevolve.policies.openai import OpenAIPolicy, closing_tag
from genevolve.protocol import FINAL_ROUND_MESSAGE, format_answer, format_tool_call
from genevolve.tools.base import Tool, ToolResult

SEARCH = format_tool_call("search", {"queries": ["Eiffel Tower"]}, think="I need facts")
IMAGE_SEARCH = format_tool_call("image_search", {"query": "Eiffel Tower"}, think="and a picture")
ANSWER = format_answer({"gen_prompt": 'The Eiffel Tower like the first reference image, title "PARIS".',
                        "reference_images": [{"img_id": "IMG_001", "note": "tower"}]}, think="ready")
PLAIN_ANSWER = format_answer({"gen_prompt": 'The Eiffel Tower at dusk, title "PARIS".', "reference_images": []},
                             think="enough")


class Search(Tool):
    name = "search"

    def __call__(self, args, ctx):
        return ToolResult(text="The Eiffel Tower is a wrought-iron lattice tower.")


class Pictures(Tool):
    name = "image_search"

    def __call__(self, args, ctx):
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        path = ctx.work_dir / "tower.png"
        Image.new("RGB", (1600, 800), (120, 90, 60)).save(path)
        ref = ctx.registry.register(path, source="library", title="Eiffel Tower")
        return ToolResult(text=f"- {ref.img_id}: Eiffel Tower — the tower (source: library, 1600x800)", images=[ref])


def run(server, tmp_path, stream=True, **cfg):
    policy = OpenAIPolicy("genevolve", server.base_url, stream=stream, max_retries=2, timeout=10)
    agent = Agent(policy, [Search(), Pictures()], AgentConfig(**cfg), work_dir=tmp_path)
    return agent.run('A poster of the Eiffel Tower titled "PARIS"')


@pytest.mark.parametrize("stream", [True, False])
def test_full_trajectory(tmp_path, stream):
    # The trailing text after the closing tag is cut by the server's stop handling; the policy
    # puts the dropped closing tag back.
    with ChatServer([SEARCH + " extra", IMAGE_SEARCH, ANSWER]) as server:
        traj = run(server, tmp_path, stream=stream)
        bodies = server.requests
    assert traj.termination == "answer", traj.reason
    assert [s.kind for s in traj.steps] == ["tool_call", "tool_call", "answer"]
    assert traj.steps[0].assistant_text == SEARCH
    assert traj.program.reference_images[0].img_id == "IMG_001"
    # A whole-reply request carries no stream field at all (as the openai SDK sends it).
    assert all(b.get("stream", False) is stream and ("stream" in b) is stream for b in bodies)
    assert bodies[0]["stop"] == ["</tool_call>", "</answer>"] and bodies[0]["model"] == "genevolve"
    # The third request carries the image found in round 2 as a downscaled data URI.
    parts = bodies[2]["messages"][-1]["content"]
    assert isinstance(parts, list) and parts[0]["type"] == "text" and parts[0]["text"].startswith("<tool_response>")
    uri = parts[1]["image_url"]["url"]
    assert uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        assert max(im.size) == 1024
    assert bodies[2]["messages"][0]["role"] == "system"


def test_format_error_and_recovery(tmp_path):
    with ChatServer(["I think the answer is a tower.", SEARCH, ANSWER, ANSWER]) as server:
        traj = run(server, tmp_path)
        second = server.requests[1]["messages"]
    assert traj.termination == "answer"
    assert traj.steps[0].kind == "format_error"
    assert second[-1]["content"].startswith("Your last turn could not be used")
    # IMG_001 was never shown: the answer gets a correction, and the same answer again is repaired.
    assert [s.kind for s in traj.steps] == ["format_error", "tool_call", "format_error", "answer"]
    assert traj.program.reference_images == []


def test_model_that_never_answers(tmp_path):
    with ChatServer(lambda body: SEARCH) as server:
        traj = run(server, tmp_path, max_rounds=4)
        last = server.requests[-1]["messages"]
    assert traj.program is None and traj.termination == "max_rounds"
    assert len(traj.steps) == 4
    assert any(m["content"] == FINAL_ROUND_MESSAGE for m in last)


def test_forced_final_round_answer(tmp_path):
    def reply(body):
        final = any(m["content"] == FINAL_ROUND_MESSAGE for m in body["messages"])
        return PLAIN_ANSWER if final else SEARCH

    with ChatServer(reply) as server:
        traj = run(server, tmp_path, max_rounds=3)
    assert traj.termination == "forced_answer" and traj.program is not None


def test_server_dies_mid_stream(tmp_path):
    with ChatServer([SEARCH, Reply(ANSWER, die_after=12)]) as server:
        traj = run(server, tmp_path)
    assert traj.termination == "policy_error"
    assert "broke off" in traj.reason and "\n" not in traj.reason
    assert traj.steps[-1].assistant_text.startswith("<think>")


def test_retries_on_429_then_succeeds(tmp_path):
    with ChatServer([Reply(status=429), Reply(status=503), PLAIN_ANSWER]) as server:
        traj = run(server, tmp_path)
        n = len(server.requests)
    assert traj.termination == "answer" and n == 3


def test_5xx_after_retries_is_a_policy_error(tmp_path):
    with ChatServer([Reply(status=503)] * 5) as server:
        traj = run(server, tmp_path)
    assert traj.termination == "policy_error" and "503" in traj.reason


def test_connection_refused_is_a_one_line_policy_error():
    policy = OpenAIPolicy("m", "http://127.0.0.1:9/v1", max_retries=0, timeout=2)
    with pytest.raises(PolicyError, match="cannot reach"):
        list(policy.stream([{"role": "user", "content": "hi"}]))


def test_missing_key_for_a_remote_url(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(PolicyError, match="OPENAI_API_KEY"):
        make_policy("openai:gpt-4o@https://api.example.com/v1")
    assert make_policy("openai:local@http://127.0.0.1:8000/v1").api_key == "EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert make_policy("openai:gpt-4o@https://api.example.com/v1").api_key == "sk-test"


def test_closing_tag():
    assert closing_tag('<think>a</think><tool_call>{"name": "x"}') == "</tool_call>"
    assert closing_tag("<think>a</think><answer>{}") == "</answer>"
    assert closing_tag("<think>a</think><answer>{}</answer>") == ""
    assert closing_tag("no tags") == ""


def test_sample_returns_n_turns():
    with ChatServer([SEARCH, ANSWER]) as server:
        turns = OpenAIPolicy("m", server.base_url).sample([{"role": "user", "content": "x"}], 2)
    assert turns == [SEARCH, ANSWER]


def test_chat_server_lists_models_and_runs_out():
    import httpx

    with ChatServer([], model="tiny") as server:
        assert httpx.get(server.base_url + "/models").json()["data"][0]["id"] == "tiny"
        r = httpx.post(server.base_url + "/chat/completions", json={"model": "tiny", "messages": []})
        assert r.status_code == 500 and "no scripted reply" in r.text
