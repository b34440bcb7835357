"""Conformance of the ``official`` protocol profile: message by message, what the official runtime sends.

Each scenario scripts the model's turns on a real OpenAI-compatible server on 127.0.0.1 and runs
our agent under ``official:<stand-in>`` with real tools against a Serper-shaped server on
127.0.0.1. The expected conversations are written out literally from the official runtime's
formats (system prompt and final-step message placed as it places them, ``<tool_response>``
wrapping, search/image/skill reply layouts, nudges, answer resolution); local file paths are
normalised. The stand-in asset folder (tests/helpers/official_standin) has the official layout and our own
placeholder texts. ``scripts/official_conformance.py`` runs the same scenarios against a real copy
of the official release, side by side with its own runtime.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from helpers.chat_server import ChatServer
from genevolve.agent import Agent, AgentConfig
from genevolve.official.assets import OfficialAssetsError, load
from genevolve.policies import make_policy
from genevolve.profiles import OfficialProfile, ProfileError, get_profile
from genevolve.tools.cache import ToolCache, wrap_with_cache
from genevolve.tools.image_search import ImageSearchTool, SerperImages, UserImages
from genevolve.tools.knowledge import KnowledgeTool
from genevolve.tools.search import SearchTool, SerperText

STANDIN = Path(__file__).parents[1] / "helpers" / "official_standin"
ASSETS = load(STANDIN)
SYS, FINAL = ASSETS.system_prompt, ASSETS.final_step_message
SKILLS = ("spatial_layout, aesthetic_drawing, text_rendering, creative_drawing, anatomy_body_coherence, "
          "attribute_binding, physical_material_consistency, quantity_counting")
NUDGE = ("<tool_response>\nFormat error: must output one <tool_call>{...}</tool_call> or <answer>{...}</answer>."
         "\n</tool_response>")
REQUEST = "A travel poster of the Eiffel Tower at dusk with the title \"PARIS\"."


def call(name, args, think="plan"):
    return f"<think>{think}</think>\n<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


def answer(prompt, refs=(), think="done"):
    body = {"gen_prompt": prompt, "reference_images": [{"img_id": i, "note": n} for i, n in refs]}
    return f"<think>{think}</think>\n<answer>\n{json.dumps(body)}\n</answer>"


def resp(text):
    return f"<tool_response>\n{text}\n</tool_response>"


def search_reply(*queries):
    blocks = []
    for q in queries:
        slug = _slug(q)
        blocks.append(f"--- search result for [{q}] ---\n1. title: About {q}\n  url: https://example.org/{slug}\n"
                      f"  snippet: Facts about {q}.\n2. title: {q} gallery\n--- end of search result ---")
    return "\n".join(blocks)


def image_reply(q, first_id, base):
    slug = _slug(q)
    a, b = f"IMG_{first_id:03d}", f"IMG_{first_id + 1:03d}"
    return (f"--- image search result for [{q}] ---\n"
            f"{a}: title: {q} photo\n  url: {base}/img/{slug}-1.png\n  local_path: <path>\n"
            f"  page_url: https://example.org/{slug}/page\n"
            f"{b}: title: image\n  url: {base}/img/{slug}-2.png\n  local_path: <path>\n"
            f"--- end of image search result ---")


def skill_reply(name):
    return f"## Skill Guidance\n\n=== Skill: {name} ===\n" + (STANDIN / f"genevolve/knowledge/skills/{name}.md").read_text()


def _slug(q):
    return re.sub(r"[^a-z0-9]+", "-", q.lower()).strip("-")


# ---------------------------------------------------------------- a Serper-shaped server

@pytest.fixture(scope="module")
def serper():
    httpd, info = start_serper()
    yield info
    httpd.shutdown()
    httpd.server_close()


def start_serper():
    """A Serper-shaped search server on 127.0.0.1 (also used by scripts/official_conformance.py)."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, status, body, ctype="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, payload))
            q, base = payload["q"], f"http://127.0.0.1:{self.server.server_address[1]}"
            slug = _slug(q)
            if "broken" in q:
                return self._send(500, b'{"message": "upstream down"}')
            if self.path == "/images" and "duplicate" in q:  # one picture at two URLs, and a web page
                body = {"images": [{"title": "copy one", "imageUrl": f"{base}/same/a.png", "link": "https://example.org/a"},
                                   {"title": "copy two", "imageUrl": f"{base}/same/b.png", "link": "https://example.org/b"},
                                   {"title": "a web page", "imageUrl": f"{base}/page/index.html", "link": ""}]}
                return self._send(200, json.dumps(body).encode())
            if self.path == "/images" and "linkless" in q:  # rows without imageUrl or without link
                body = {"images": [{"title": "thumb only", "thumbnailUrl": f"{base}/img/{slug}-1.png",
                                    "source": "example.org"},
                                   {"title": "", "imageUrl": f"{base}/img/{slug}-2.png", "source": "example.net"},
                                   {"title": "no picture at all", "link": "https://example.org/nothing"},
                                   {"url": f"{base}/img/{slug}-4.png", "link": "https://example.org/4"}]}
                return self._send(200, json.dumps(body).encode())
            if self.path == "/search":
                body = {"answerBox": {"title": "Not shown by the official runtime", "answer": "42"},
                        "organic": [{"title": f"About {q}", "link": f"https://example.org/{slug}",
                                     "snippet": f"Facts about {q}.", "position": 1},
                                    {"title": f"{q} gallery", "link": "", "snippet": "", "position": 2}]}
            else:
                body = {"images": [
                    {"title": f"{q} photo", "imageUrl": f"{base}/img/{slug}-1.png",
                     "link": f"https://example.org/{slug}/page", "source": "example.org"},
                    {"title": "", "imageUrl": f"{base}/img/{slug}-2.png", "link": "", "source": ""},
                    {"title": "gone", "imageUrl": f"{base}/missing.png", "link": "https://example.org/x"}]}
            self._send(200, json.dumps(body).encode())

        def do_GET(self):  # noqa: N802
            if self.path.startswith("/page/"):
                return self._send(200, b"<html>a page, not a picture</html>", "text/html")
            if self.path.startswith("/same/"):
                buf = io.BytesIO()
                Image.new("RGB", (40, 40), (10, 120, 200)).save(buf, "PNG")
                return self._send(200, buf.getvalue(), "image/png")
            if not self.path.startswith("/img/"):
                return self._send(404, b"not found", "text/plain")
            colour = hashlib.sha256(self.path.encode()).digest()[:3]
            buf = io.BytesIO()
            Image.new("RGB", (48, 32), tuple(colour)).save(buf, "PNG")
            self._send(200, buf.getvalue(), "image/png")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    return httpd, {"base": f"http://127.0.0.1:{port}", "seen": seen, "allow": {f"127.0.0.1:{port}"}}


def official_tools(serper, cache=None):
    tools = {"search": SearchTool(SerperText("k", base_url=serper["base"])),
             "image_search": ImageSearchTool(None, web=SerperImages("k", base_url=serper["base"]),
                                             user=UserImages(embeddings=False),
                                             download_kwargs={"allow_hosts": serper["allow"]}),
             "query_knowledge": KnowledgeTool()}
    return wrap_with_cache(tools, cache) if cache is not None else tools


# ---------------------------------------------------------------- the scenarios

@dataclass
class Scenario:
    name: str
    turns: list  # the model's turns, in order
    expected: callable  # base_url -> the full conversation the runtime builds
    termination: str
    max_rounds: int = 11
    program: dict | None = None  # gen_prompt and reference ids expected, when an answer is expected
    extra: dict = field(default_factory=dict)


def _normal(base):
    t = NORMAL.turns
    return [
        {"role": "system", "content": SYS}, {"role": "user", "content": REQUEST},
        {"role": "assistant", "content": t[0]}, {"role": "user", "content": resp(search_reply("eiffel tower height"))},
        {"role": "assistant", "content": t[1]}, {"role": "user", "content": resp(image_reply("eiffel tower dusk", 1, base))},
        {"role": "assistant", "content": t[2]}, {"role": "user", "content": resp(skill_reply("text_rendering"))},
        {"role": "assistant", "content": t[3]},
    ]


NORMAL = Scenario(
    "normal",
    [call("search", {"queries": ["eiffel tower height"]}),
     call("image_search", {"query": "eiffel tower dusk"}),
     call("query_knowledge", {"skill_name": "text_rendering"}),
     answer("A poster in the style of the first reference image, title \"PARIS\".", [("IMG_001", "tower")])],
    _normal, "answer", program={"gen_prompt": "A poster in the style of the first reference image, title \"PARIS\".",
                                "refs": ["IMG_001"]})

FORMAT_ERROR = Scenario(
    "format_error",
    ["I think I should search first.",  # no action at all
     "<think>x</think><tool_call>{\"name\": \"search\", \"arguments\": {'queries': ['x']}}</tool_call>",  # not JSON
     call("search", {"queries": ["paris poster"]}),
     answer("A Paris travel poster at dusk, title \"PARIS\".")],
    lambda base: [
        {"role": "system", "content": SYS}, {"role": "user", "content": REQUEST},
        {"role": "assistant", "content": FORMAT_ERROR.turns[0]}, {"role": "user", "content": NUDGE},
        {"role": "assistant", "content": FORMAT_ERROR.turns[1]}, {"role": "user", "content": NUDGE},
        {"role": "assistant", "content": FORMAT_ERROR.turns[2]}, {"role": "user", "content": resp(search_reply("paris poster"))},
        {"role": "assistant", "content": FORMAT_ERROR.turns[3]}],
    "answer", program={"gen_prompt": "A Paris travel poster at dusk, title \"PARIS\".", "refs": []})

UNKNOWN_SKILL = Scenario(
    "unknown_skill",
    [call("query_knowledge", {"skill_name": "Text Rendering"}),
     call("query_knowledge", {"skill": "text_rendering"}),
     answer("A Paris poster.")],
    lambda base: [
        {"role": "system", "content": SYS}, {"role": "user", "content": REQUEST},
        {"role": "assistant", "content": UNKNOWN_SKILL.turns[0]},
        {"role": "user", "content": resp(f"Unknown skill 'Text Rendering'. Available skills: {SKILLS}")},
        {"role": "assistant", "content": UNKNOWN_SKILL.turns[1]},
        {"role": "user", "content": resp(f"Unknown skill ''. Available skills: {SKILLS}")},
        {"role": "assistant", "content": UNKNOWN_SKILL.turns[2]}],
    "answer", program={"gen_prompt": "A Paris poster.", "refs": []})

UNKNOWN_ID = Scenario(
    "unknown_id",
    [call("image_search", {"query": "eiffel tower"}),
     call("image_search", {"query": "paris street", "top_k": 2}),
     answer("Blend the first and the second reference image.",
            [("IMG_009", "never shown"), ("IMG_003", "street"), ("IMG_002", "tower b"), ("IMG_001", "tower a")])],
    lambda base: [
        {"role": "system", "content": SYS}, {"role": "user", "content": REQUEST},
        {"role": "assistant", "content": UNKNOWN_ID.turns[0]}, {"role": "user", "content": resp(image_reply("eiffel tower", 1, base))},
        {"role": "assistant", "content": UNKNOWN_ID.turns[1]}, {"role": "user", "content": resp(image_reply("paris street", 3, base))},
        {"role": "assistant", "content": UNKNOWN_ID.turns[2]}],
    "answer", program={"gen_prompt": "Blend the first and the second reference image.", "refs": ["IMG_001", "IMG_002"]})

BOTH = Scenario(
    "answer_plus_tool_call",
    ["<think>both</think>\n<tool_call>{\"name\": \"search\", \"arguments\": {\"queries\": [\"x\"]}}</tool_call>\n"
     + answer("A Paris poster at dusk.", think="and an answer")],
    lambda base: [{"role": "system", "content": SYS}, {"role": "user", "content": REQUEST},
                  {"role": "assistant", "content": BOTH.turns[0]}],
    "answer", program={"gen_prompt": "A Paris poster at dusk.", "refs": []})

FINAL_ROUND = Scenario(
    "final_round",
    [call("image_search", {"query": "eiffel tower"}),
     call("search", {"queries": ["eiffel tower", "paris dusk"]}),
     "  " + answer("The first reference image at dusk.", [("IMG_002", "b")]) + "\n\n"],
    lambda base: [
        {"role": "system", "content": SYS}, {"role": "user", "content": REQUEST},
        {"role": "assistant", "content": FINAL_ROUND.turns[0]}, {"role": "user", "content": resp(image_reply("eiffel tower", 1, base))},
        {"role": "assistant", "content": FINAL_ROUND.turns[1]},
        {"role": "user", "content": resp(search_reply("eiffel tower", "paris dusk"))},
        {"role": "user", "content": FINAL},
        {"role": "assistant", "content": FINAL_ROUND.turns[2].strip()}],
    "answer", max_rounds=3, program={"gen_prompt": "The first reference image at dusk.", "refs": ["IMG_002"]})

NO_ANSWER = Scenario(
    "final_round_without_answer",
    [call("search", {"queries": ["paris"]}), "<think>I still want to search</think>"],
    lambda base: [
        {"role": "system", "content": SYS}, {"role": "user", "content": REQUEST},
        {"role": "assistant", "content": NO_ANSWER.turns[0]}, {"role": "user", "content": resp(search_reply("paris"))},
        {"role": "user", "content": FINAL}, {"role": "assistant", "content": NO_ANSWER.turns[1]}],
    "no_answer", max_rounds=2)

TOOL_IN_FINAL = Scenario(
    "tool_call_in_final_round",
    ["<think>?</think>", call("search", {"queries": ["paris"]})],
    lambda base: [
        {"role": "system", "content": SYS}, {"role": "user", "content": REQUEST},
        {"role": "assistant", "content": TOOL_IN_FINAL.turns[0]}, {"role": "user", "content": NUDGE},
        {"role": "user", "content": FINAL}, {"role": "assistant", "content": TOOL_IN_FINAL.turns[1]},
        {"role": "user", "content": resp(search_reply("paris"))}],
    "max_rounds_reached", max_rounds=2)

EMPTY = Scenario(
    "empty_queries",
    [call("search", {"queries": []}), call("search", {"query": "eiffel"}), call("search", {"queries": ["  ", ""]}),
     call("image_search", {"query": ""}), call("image_search", {"queries": ["eiffel"]}), answer("A Paris poster.")],
    lambda base: [
        {"role": "system", "content": SYS}, {"role": "user", "content": REQUEST},
        {"role": "assistant", "content": EMPTY.turns[0]}, {"role": "user", "content": resp("[search] empty queries")},
        {"role": "assistant", "content": EMPTY.turns[1]}, {"role": "user", "content": resp("[search] empty queries")},
        {"role": "assistant", "content": EMPTY.turns[2]}, {"role": "user", "content": resp("[search] no results")},
        {"role": "assistant", "content": EMPTY.turns[3]},
        {"role": "user", "content": resp("--- image search result for [] ---\n--- end of image search result ---")},
        {"role": "assistant", "content": EMPTY.turns[4]},
        {"role": "user", "content": resp("--- image search result for [] ---\n--- end of image search result ---")},
        {"role": "assistant", "content": EMPTY.turns[5]}],
    "answer", program={"gen_prompt": "A Paris poster.", "refs": []})

TOOL_FAILURE = Scenario(
    "tool_failure",
    [call("search", {"queries": ["paris"], "top_k": "five"}),
     call("image_search", {"query": ["eiffel", "tower"]}),
     call("web_search", {"queries": ["paris"]}),
     call("search", {"queries": ["broken backend", "paris"]}),
     call("image_search", {"query": "broken backend"}),
     answer("A Paris poster.")],
    lambda base: [
        {"role": "system", "content": SYS}, {"role": "user", "content": REQUEST},
        {"role": "assistant", "content": TOOL_FAILURE.turns[0]},
        {"role": "user", "content": resp("[tool error] search: invalid literal for int() with base 10: 'five'")},
        {"role": "assistant", "content": TOOL_FAILURE.turns[1]},
        {"role": "user", "content": resp("[tool error] image_search: 'list' object has no attribute 'strip'")},
        {"role": "assistant", "content": TOOL_FAILURE.turns[2]}, {"role": "user", "content": resp("Unknown tool: web_search")},
        {"role": "assistant", "content": TOOL_FAILURE.turns[3]},
        {"role": "user", "content": resp("--- search error for [broken backend]: <error> ---\n" + search_reply("paris"))},
        {"role": "assistant", "content": TOOL_FAILURE.turns[4]},
        {"role": "user", "content": resp("--- image search result for [broken backend] ---\n--- end of image search result ---")},
        {"role": "assistant", "content": TOOL_FAILURE.turns[5]}],
    "answer", program={"gen_prompt": "A Paris poster.", "refs": []})

def _duplicates_reply(base):
    return ("--- image search result for [duplicate pictures] ---\n"
            f"IMG_001: title: copy one\n  url: {base}/same/a.png\n  local_path: <path>\n  page_url: https://example.org/a\n"
            f"IMG_002: title: copy two\n  url: {base}/same/b.png\n  local_path: <path>\n  page_url: https://example.org/b\n"
            f"IMG_003: title: a web page\n  url: {base}/page/index.html\n  local_path: <path>\n"
            "--- end of image search result ---")


DUPLICATES = Scenario(
    "duplicate_images",
    [call("image_search", {"query": "duplicate pictures"}),
     call("image_search", {"query": "duplicate pictures"}),
     answer("The second reference image, brighter.", [("IMG_002", "copy two")])],
    lambda base: [
        {"role": "system", "content": SYS}, {"role": "user", "content": REQUEST},
        {"role": "assistant", "content": DUPLICATES.turns[0]}, {"role": "user", "content": resp(_duplicates_reply(base))},
        {"role": "assistant", "content": DUPLICATES.turns[1]}, {"role": "user", "content": resp(_duplicates_reply(base))},
        {"role": "assistant", "content": DUPLICATES.turns[2]}],
    "answer", program={"gen_prompt": "The second reference image, brighter.", "refs": ["IMG_002"]})

LINKLESS = Scenario(
    "linkless_images",
    [call("image_search", {"query": "linkless tower"}),
     answer("", [("IMG_002", "tower"), ("IMG_001", "thumb")])],
    lambda base: [
        {"role": "system", "content": SYS}, {"role": "user", "content": REQUEST},
        {"role": "assistant", "content": LINKLESS.turns[0]},
        {"role": "user", "content": resp(
            "--- image search result for [linkless tower] ---\n"
            f"IMG_001: title: thumb only\n  url: {base}/img/linkless-tower-1.png\n  local_path: <path>\n"
            "  page_url: example.org\n"
            f"IMG_002: title: image\n  url: {base}/img/linkless-tower-2.png\n  local_path: <path>\n"
            "  page_url: example.net\n"
            f"IMG_003: title: image\n  url: {base}/img/linkless-tower-4.png\n  local_path: <path>\n"
            "  page_url: https://example.org/4\n"
            "--- end of image search result ---")},
        {"role": "assistant", "content": LINKLESS.turns[1]}],
    # An empty gen_prompt keeps its resolved references, as the official runtime keeps them.
    "answer", program={"gen_prompt": "", "refs": ["IMG_001", "IMG_002"]})

MALFORMED_ANSWER = Scenario(
    "malformed_answer",
    ['<think>done</think>\n<answer>\n{"gen_prompt": "A Paris poster.", "reference_images": [],}\n</answer>',
     '<think>again</think>\n<answer>{"gen_prompt": "A Paris poster at dusk.", '
     '"reference_images": ["IMG_001", {"note": "no id"}, 7]}</answer>'],
    lambda base: [
        {"role": "system", "content": SYS}, {"role": "user", "content": REQUEST},
        {"role": "assistant", "content": MALFORMED_ANSWER.turns[0]}, {"role": "user", "content": NUDGE},
        {"role": "assistant", "content": MALFORMED_ANSWER.turns[1]}],
    "answer", program={"gen_prompt": "A Paris poster at dusk.", "refs": []})

SCENARIOS = [NORMAL, FORMAT_ERROR, UNKNOWN_SKILL, UNKNOWN_ID, BOTH, FINAL_ROUND, NO_ANSWER, TOOL_IN_FINAL, EMPTY,
             TOOL_FAILURE, DUPLICATES, LINKLESS, MALFORMED_ANSWER]


def normalise(messages: list[dict]) -> list[dict]:
    """Local file paths and backend error details differ between machines; everything else must not."""
    out = []
    for m in messages:
        text = re.sub(r"(?m)^  local_path: .+$", "  local_path: <path>", m["content"])
        text = re.sub(r"(?m)^--- search error for \[(.*?)\]: .* ---$", r"--- search error for [\1]: <error> ---", text)
        out.append({"role": m["role"], "content": text})
    return out


def run_scenario(sc: Scenario, serper, tmp_path, cache=None, official=STANDIN, stream=True):
    with ChatServer(list(sc.turns)) as server:
        policy = make_policy(f"openai:GenEvolve@{server.base_url}" + ("" if stream else "?stream=0"))
        agent = Agent(policy, official_tools(serper, cache),
                      AgentConfig(max_rounds=sc.max_rounds, offline=False, protocol=f"official:{official}"),
                      work_dir=tmp_path / "runs")
        traj = agent.run(REQUEST)
        return traj, list(server.requests)


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_conversation_matches_the_official_runtime(sc, serper, tmp_path):
    traj, requests = run_scenario(sc, serper, tmp_path)
    expected = sc.expected(serper["base"])
    # The whole conversation, and each request's messages are exactly its prefix up to that turn.
    assert normalise(traj.messages) == expected
    assert all(set(m) == {"role", "content"} for m in traj.messages)  # no image ids riding along
    assert len(requests) == sum(1 for m in expected if m["role"] == "assistant")
    for body in requests:
        sent = body["messages"]
        assert all(isinstance(m["content"], str) for m in sent)  # text only: no image parts, ever
        assert normalise(sent) == expected[:len(sent)]
        assert expected[len(sent)]["role"] == "assistant"
        # The official sampling: 0.6 / 0.9 / 4096 and no stop strings.
        assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.6, 0.9, 4096)
        assert "stop" not in body
    assert traj.termination == sc.termination
    assert traj.meta["protocol"] == "official"
    if sc.program is None:
        assert traj.program is None
    else:
        assert traj.program.gen_prompt == sc.program["gen_prompt"]
        assert [r.img_id for r in traj.program.reference_images] == sc.program["refs"]
        for ref in traj.program.reference_images:
            assert Path(ref.path).is_file()
    for line in re.findall(r"(?m)^  local_path: (.+)$", "\n".join(m["content"] for m in traj.messages)):
        assert Path(line).is_file() and (tmp_path / "runs") in Path(line).parents


def official_body(messages):
    """The whole request body the official runtime's openai SDK call sends."""
    return {"model": "GenEvolve", "messages": messages, "max_tokens": 4096, "temperature": 0.6, "top_p": 0.9}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "stream=0"])
def test_whole_request_bodies_match_the_official_runtime(stream, serper, tmp_path):
    """Byte for byte the body the official runtime sends; streaming adds only "stream": true."""
    traj, requests = run_scenario(NORMAL, serper, tmp_path, stream=stream)
    expected = NORMAL.expected(serper["base"])
    assert len(requests) == 4
    for body in requests:
        sent = dict(body, messages=normalise(body["messages"]))
        want = official_body(expected[:len(body["messages"])])
        assert (sent == dict(want, stream=True)) if stream else (sent == want)
    assert traj.program.gen_prompt == NORMAL.program["gen_prompt"]


def test_serper_is_asked_as_the_official_runtime_asks(serper, tmp_path):
    serper["seen"].clear()
    run_scenario(NORMAL, serper, tmp_path)
    assert [(p, b["num"]) for p, b in serper["seen"]] == [("/search", 5), ("/images", 5)]


def test_unknown_id_is_dropped_with_a_warning(serper, tmp_path):
    traj, _ = run_scenario(UNKNOWN_ID, serper, tmp_path)
    assert any("IMG_009" in w for w in traj.warnings)
    assert [s.kind for s in traj.steps] == ["tool_call", "tool_call", "answer"]


def test_cached_replies_are_identical_and_name_this_runs_files(serper, tmp_path):
    cache = ToolCache(tmp_path / "cache.db", "readwrite")
    first, _ = run_scenario(NORMAL, serper, tmp_path / "a", cache)
    second, _ = run_scenario(NORMAL, serper, tmp_path / "b", cache)
    assert cache.hits >= 3
    assert normalise(first.messages) == normalise(second.messages)
    paths = re.findall(r"(?m)^  local_path: (.+)$", second.messages[5]["content"])
    assert paths and all(Path(p).is_file() and tmp_path / "a" not in Path(p).parents for p in paths)
    # One picture at two URLs keeps two ids when the reply comes from the cache, too.
    dup_a, _ = run_scenario(DUPLICATES, serper, tmp_path / "d1", cache)
    dup_b, _ = run_scenario(DUPLICATES, serper, tmp_path / "d2", cache)
    assert normalise(dup_a.messages) == normalise(dup_b.messages) == DUPLICATES.expected(serper["base"])
    assert [r.img_id for r in dup_b.program.reference_images] == ["IMG_002"]
    # Exact arguments: another spelling is another question under the official profile.
    third, _ = run_scenario(UNKNOWN_SKILL, serper, tmp_path / "c", cache)
    assert "Unknown skill 'Text Rendering'" in third.messages[3]["content"]


def test_policy_failure_is_the_official_error_termination(tmp_path):
    agent = Agent(make_policy("openai:GenEvolve@http://127.0.0.1:9/v1?max_tokens=64"), {},
                  AgentConfig(protocol=f"official:{STANDIN}"), work_dir=tmp_path)
    traj = agent.run("x")
    assert traj.termination == "error" and "127.0.0.1:9" in traj.reason


def test_our_profile_is_unchanged_by_the_official_one(tmp_path):
    """The same format-error script under ours: one correction, then the run ends in round 2."""
    with ChatServer(list(FORMAT_ERROR.turns)) as server:
        agent = Agent(make_policy(f"openai:GenEvolve@{server.base_url}"), {}, AgentConfig(), work_dir=tmp_path)
        traj = agent.run(REQUEST)
        body = server.requests[0]
    assert traj.termination == "format_error" and len(traj.steps) == 2
    assert (body["temperature"], body["max_tokens"], "top_p" in body) == (0.7, 2048, False)
    assert body["stop"] == ["</tool_call>", "</answer>"]


# ---------------------------------------------------------------- profile selection and sampling

def test_profile_from_a_checkout_an_env_var_or_a_clear_error(tmp_path, monkeypatch):
    assert get_profile(f"official:{STANDIN}").assets.system_prompt == SYS
    assert get_profile(f"official:{STANDIN / 'genevolve'}").assets.package_dir == (STANDIN / "genevolve").resolve()
    monkeypatch.setenv("GENEVOLVE_OFFICIAL_PATH", str(STANDIN))
    profile = get_profile("official")
    assert isinstance(profile, OfficialProfile) and profile.spec == "official"
    monkeypatch.delenv("GENEVOLVE_OFFICIAL_PATH")
    with pytest.raises(ProfileError, match=r"git clone https://github.com/MeiGen-AI/GenEvolve.*official:/path"):
        get_profile(f"official:{tmp_path}")
    # Our own package is never taken for the official one.
    with pytest.raises(ProfileError, match="not found"):
        get_profile(f"official:{Path(__file__).parents[2]}")
    bad = tmp_path / "genevolve"
    bad.mkdir()
    (bad / "system_prompt.py").write_text("SYSTEM_PROMPT = compute()\n")
    with pytest.raises(ProfileError, match="FINAL_STEP_MESSAGE"):
        get_profile(f"official:{tmp_path}")
    with pytest.raises(ProfileError, match="genevolve, nano, official"):
        get_profile("offical")


def test_assets_are_read_without_running_the_module(tmp_path):
    pkg = tmp_path / "genevolve"
    (pkg / "knowledge" / "skills").mkdir(parents=True)
    marker = tmp_path / "ran"
    (pkg / "system_prompt.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\nFINAL_STEP_MESSAGE = 'last'\nSYSTEM_PROMPT = 'sys'\n")
    assets = load(tmp_path)
    assert (assets.system_prompt, assets.final_step_message, assets.skills) == ("sys", "last", {})
    assert not marker.exists()
    # A skill file the copy lacks gets the official runtime's message naming the expected file.
    result = KnowledgeTool()({"skill_name": "spatial_layout"},
                             _ctx(tmp_path, get_profile(f"official:{tmp_path}")))
    assert result.text == f"No skill content available for 'spatial_layout'. Expected file: {pkg / 'knowledge/skills/spatial_layout.md'}"
    with pytest.raises(OfficialAssetsError):
        load(tmp_path / "nowhere")


def _ctx(tmp_path, profile):
    from genevolve.tools.base import ToolContext
    from genevolve.trajectory import ImageRegistry

    return ToolContext(registry=ImageRegistry(), work_dir=tmp_path, profile=profile)


def test_sampling_from_the_spec_overrides_the_profile(tmp_path):
    with ChatServer([answer("A poster.")]) as server:
        spec = f"openai:GenEvolve@{server.base_url}?temperature=0.2&max_tokens=777"
        policy = make_policy(spec)
        assert policy.base_url == server.base_url  # the query never reaches the base URL
        Agent(policy, {}, AgentConfig(protocol=f"official:{STANDIN}"), work_dir=tmp_path).run("x")
        body = server.requests[0]
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.2, 0.9, 777)


def test_spec_parsing_keeps_the_servers_own_query():
    from genevolve.specs import parse_spec

    s = parse_spec("openai:m@https://h.example/v1?api-version=2024&top_p=0.5")
    assert (s.base_url, s.params) == ("https://h.example/v1?api-version=2024", {"top_p": "0.5"})
    assert parse_spec("openai:m?temperature=0.6").params == {"temperature": "0.6"}
    with pytest.raises(ValueError, match="temperature='hot'.*not a number"):
        make_policy("openai:m@http://127.0.0.1:9/v1?temperature=hot")
    with pytest.raises(ValueError, match="out of range"):
        make_policy("openai:m@http://127.0.0.1:9/v1?top_p=1.5")


def test_local_policy_sampling_from_spec_and_profile(tiny_gemma_path, tmp_path):
    import torch

    from genevolve.profiles import OFFICIAL_SAMPLING

    policy = make_policy(f"hf:{tiny_gemma_path}?temperature=0.3&max_tokens=33", dtype=torch.float32)
    assert (policy.temperature, policy.top_p, policy.max_new_tokens) == (0.3, 1.0, 33)
    Agent(policy, {}, AgentConfig(), work_dir=tmp_path)  # ours: the backend keeps its own defaults
    assert (policy.temperature, policy.top_p, policy.max_new_tokens) == (0.3, 1.0, 33)
    policy.use_profile_sampling(OFFICIAL_SAMPLING)  # the spec's values win; the rest is the profile's
    assert (policy.temperature, policy.top_p, policy.max_new_tokens) == (0.3, 0.9, 33)


def test_chosen_from_env_config_and_cli_and_recorded(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from genevolve.agent import build_agent
    from genevolve.cli import app
    from genevolve.config import Settings

    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps([answer("A Paris poster.")]))
    monkeypatch.setenv("GENEVOLVE_PROTOCOL", f"official:{STANDIN}")
    settings = Settings.load(policy=f"replay:{turns}", cache_mode="off", offline=True)
    assert settings.protocol == f"official:{STANDIN}"
    traj = build_agent(settings).run("A poster")
    assert traj.meta["protocol"] == "official" and traj.messages[0]["content"] == SYS
    monkeypatch.delenv("GENEVOLVE_PROTOCOL")
    runner = CliRunner()
    res = runner.invoke(app, ["run", "A poster", "--policy", f"replay:{turns}", "--renderer", "none", "--offline",
                              "--protocol", f"official:{tmp_path / 'missing'}"])
    assert res.exit_code == 2 and "git clone https://github.com/MeiGen-AI/GenEvolve" in " ".join(res.output.split())
    res = runner.invoke(app, ["run", "A poster", "--policy", f"replay:{turns}", "--renderer", "none", "--offline",
                              "--protocol", f"official:{STANDIN}", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o" / "trajectory.json").read_text())["meta"]["protocol"] == "official"
    res = runner.invoke(app, ["bench", "run", "--bench", "mini", "--out", str(tmp_path / "b"), "--limit", "1",
                              "--protocol", "official:/nowhere/at/all", "--no-progress"])
    assert res.exit_code == 2 and "official release not found" in " ".join(res.output.split())


def test_bench_run_records_the_protocol(tmp_path):
    from genevolve.bench.runner import BenchConfig, BenchRunner

    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps([answer("A Sydney Opera House poster.")]))
    cfg = BenchConfig(bench="mini", policy=f"replay:{turns}", limit=1, offline=True, parallel=1,
                      protocol=f"official:{STANDIN}")
    from genevolve.bench.loaders import load_bench

    BenchRunner(load_bench("mini"), tmp_path / "run", cfg, progress=False).run()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["identity"]["protocol"] == f"official:{STANDIN}"
    traj = json.loads(next((tmp_path / "run" / "cases").glob("*/trajectory.json")).read_text())
    assert traj["meta"]["protocol"] == "official" and traj["messages"][0]["content"] == SYS
    assert "protocol" not in BenchConfig().identity()  # runs from before profiles still resume


def test_studio_backends_protocol_control(tmp_path):
    """The studio's Backends 'Protocol' box reaches the agent; the run records it."""
    from app import generate_tab, storage
    from genevolve.service import GenerateForm

    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps([answer("A Paris poster.")]))
    last = None
    form = GenerateForm(request="A poster", policy=f"replay:{turns}", renderer="none", protocol=f"official:{STANDIN}")
    for out in generate_tab.run_generate(form, "sessionPROTO1"):
        last = out
    runs = storage.store().list_runs(session="sessionPROTO1")
    traj = storage.store().get_trajectory(runs[0]["id"])
    assert traj.meta["protocol"] == "official" and traj.messages[0]["content"] == SYS, last["status"]
    form = GenerateForm(request="A poster", renderer="none", protocol="official:/nowhere")
    for out in generate_tab.run_generate(form, "sessionPROTO1"):
        last = out
    assert "official release not found" in last["status"]


def test_serper_failures_are_retried_as_the_official_runtime_retries(serper, tmp_path):
    """3 tries, 1 s then 3 s apart, and the official failure text (worded as `requests` words it)."""
    import time

    profile = get_profile(f"official:{STANDIN}")
    tools = official_tools(serper)
    serper["seen"].clear()
    t0 = time.monotonic()
    text = tools["search"]({"queries": ["broken backend"]}, _ctx(tmp_path, profile)).text
    took = time.monotonic() - t0
    assert text == (f"--- search error for [broken backend]: Serper /search failed after 3 retries: "
                    f"500 Server Error: Internal Server Error for url: {serper['base']}/search ---")
    assert [p for p, _ in serper["seen"]] == ["/search"] * 3 and 4.0 <= took < 8
    serper["seen"].clear()
    ctx = _ctx(tmp_path, profile)
    ctx.offline = False
    result = tools["image_search"]({"query": "broken backend"}, ctx)
    assert [p for p, _ in serper["seen"]] == ["/images"] * 3
    assert result.text == "--- image search result for [broken backend] ---\n--- end of image search result ---"
    assert "Serper /images failed after 3 retries" in result.error


def test_user_images_do_not_change_the_official_request(serper, tmp_path):
    """The official runtime takes no user images: the request goes out as typed; the user's image
    reaches the model only as an image_search result."""
    mine = tmp_path / "eiffel tower sketch.png"
    Image.new("RGB", (40, 30), (5, 5, 5)).save(mine)
    turns = [call("image_search", {"query": "eiffel tower sketch"}), answer("The first reference image.", [("IMG_001", "mine")])]
    with ChatServer(turns) as server:
        agent = Agent(make_policy(f"openai:GenEvolve@{server.base_url}"), official_tools(serper),
                      AgentConfig(offline=False, protocol=f"official:{STANDIN}"), work_dir=tmp_path / "runs")
        traj = agent.run(REQUEST, images=[mine])
        first = server.requests[0]["messages"]
    assert first[1] == {"role": "user", "content": REQUEST}
    assert "local_path: " in traj.messages[3]["content"] and "IMG_001: title: eiffel tower sketch.png" in traj.messages[3]["content"]
    assert [r.img_id for r in traj.program.reference_images] == ["IMG_001"]
    from typer.testing import CliRunner

    from genevolve.cli import app

    help_text = " ".join(CliRunner().invoke(app, ["run", "--help"]).output.replace("│", " ").split())
    assert "Under --protocol official the request is sent as the official runtime sends it" in help_text
