"""KScore reads broken judge replies as forgivingly as the official evaluator; rubric, budget and
image size come from settings or the spec (judge served on 127.0.0.1)."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from helpers.chat_server import ChatServer
from genevolve.config import Settings
from genevolve.judges import make_judge
from genevolve.judges.base import kscore_overall
from genevolve.judges.kscore import parse_kscore_reply, recover_fields

CASE = {"id": "c1", "question": 'A shop sign that reads "OPEN".'}
GOOD = {"rationale": "fine", "faithfulness": 1, "visual_correctness": 0.5, "text_accuracy": 1,
        "text_accuracy_na": False, "aesthetics": 0.5}


@pytest.mark.parametrize("reply,levels,na,note", [
    # Off-scale levels are clipped to [0, 1] (and kept to 2 decimals), as the official evaluator does.
    (json.dumps({**GOOD, "faithfulness": 2, "aesthetics": -1}), (1, 0.5, 1, 0), False, "faithfulness=2 clipped to 1"),
    (json.dumps({**GOOD, "visual_correctness": 0.7}), (1, 0.7, 1, 0.5), False, None),
    # A missing field counts 0.
    (json.dumps({k: v for k, v in GOOD.items() if k != "aesthetics"}), (1, 0.5, 1, 0), False,
     "missing field 'aesthetics' counted as 0"),
    # 'N/A' text accuracy: not applicable, 0.5.
    (json.dumps({**GOOD, "text_accuracy": "N/A"}), (1, 0.5, 0.5, 0.5), True, "read as not applicable"),
    # text_accuracy_na read as a boolean the official way: true / "true" / "True" / 1.
    (json.dumps({**GOOD, "text_accuracy": 0, "text_accuracy_na": "True"}), (1, 0.5, 0.5, 0.5), True, None),
    (json.dumps({**GOOD, "text_accuracy": 0, "text_accuracy_na": 1}), (1, 0.5, 0.5, 0.5), True, None),
    (json.dumps({**GOOD, "text_accuracy_na": "no"}), (1, 0.5, 1, 0.5), False, None),
    # Truncated JSON: fields recovered one by one (the cut rationale too).
    ('{"rationale": "The sign reads OPEN, crisp", "faithfulness": 1, "visual_correctness": 0.5, '
     '"text_accuracy": 1, "aesthetics": 0.5, "text_accuracy_na": false, "constraints": ["OPE',
     (1, 0.5, 1, 0.5), False, "fields recovered one by one"),
    ('```json\n{"rationale": "cut "quoted" words, "faithfulness": 0.5, "visual_correctness": 1,\n'
     '"text_accuracy": "N/A", "text_accuracy_na": true', (0.5, 1, 0.5, 0), True, "recovered"),
])
def test_forgiving_reading(reply, levels, na, note):
    s = parse_kscore_reply(reply)
    assert s.status == "scored", s.error
    assert (s.faithfulness, s.visual_correctness, s.text_accuracy, s.aesthetics) == levels
    assert s.overall == pytest.approx(kscore_overall(*levels))
    assert s.details["text_accuracy_na"] is na
    if note:
        assert any(note in n for n in s.details["parse_notes"]), s.details
    else:
        assert "parse_notes" not in s.details


def test_recovered_rationale_and_nothing_recoverable():
    got = recover_fields('{"rationale": "A sign;\n  it reads OPEN", "faithfulness": 1, "aesthetics": 0.')
    assert got == {"faithfulness": 1.0, "aesthetics": 0.0, "rationale": 'A sign; it reads OPEN", "faithfulness": 1, "aesthetics": 0.'}
    s = parse_kscore_reply('{"faithfulness": 1, "aesthetics": 0.')  # cut mid-number: read as float() reads "0."
    assert (s.status, s.faithfulness, s.visual_correctness, s.aesthetics) == ("scored", 1, 0, 0)
    assert parse_kscore_reply(json.dumps({**GOOD, "aesthetics": "NaN"})).status == "failed"
    for reply in ("The image looks great!", '{"verdict": "good"', "{}"):
        s = parse_kscore_reply(reply)
        assert s.status == "failed" and s.overall is None, reply


def _png(tmp_path, name, size):
    p = tmp_path / name
    Image.new("RGB", size, (200, 30, 30)).save(p)
    return p


def test_rubric_budget_and_image_size_from_settings(tmp_path, monkeypatch):
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("You are the official-style grader. Output JSON with the four scores.")
    image = _png(tmp_path, "gen.png", (3000, 1500))
    gt = _png(tmp_path, "gt.png", (800, 800))
    settings = Settings(judge_rubric=str(rubric), judge_max_tokens=8192, judge_image_side=2048)
    with ChatServer([json.dumps(GOOD)]) as server:
        judge = make_judge(f"kscore:judge@{server.base_url}", settings=settings)
        s = judge.score({**CASE, "gt_image": str(gt)}, image, None)
        body = server.requests[0]
    assert s.status == "scored" and s.details["rubric"] == "custom"
    assert body["max_tokens"] == 8192
    assert body["messages"][0] == {"role": "system", "content": rubric.read_text()}
    images = [p["image_url"]["url"] for p in body["messages"][1]["content"] if p["type"] == "image_url"]
    sent = Image.open(io.BytesIO(base64.b64decode(images[0].split(",", 1)[1])))
    assert max(sent.size) == 2048 and len(images) == 2
    # The spec wins over settings; environment settings apply when none are passed.
    monkeypatch.setenv("GENEVOLVE_JUDGE_MAX_TOKENS", "3000")
    with ChatServer([json.dumps(GOOD)]) as server:
        make_judge(f"kscore:judge@{server.base_url}?image_side=512").score(CASE, image, None)
        make_judge(f"kscore:judge@{server.base_url}?max_tokens=99", settings=settings)
        body = server.requests[0]
    assert body["max_tokens"] == 3000 and "official-style" not in body["messages"][0]["content"]
    sent = Image.open(io.BytesIO(base64.b64decode(
        [p for p in body["messages"][1]["content"] if p["type"] == "image_url"][0]["image_url"]["url"].split(",", 1)[1])))
    assert max(sent.size) == 512


def test_official_rubric_is_read_from_the_users_copy(tmp_path):
    script = tmp_path / "scripts" / "evaluate_images.py"
    script.parent.mkdir()
    script.write_text('import os\nSYSTEM_PROMPT = r"""Stand-in evaluator rubric."""\nraise SystemExit("never run")\n')
    with ChatServer([json.dumps(GOOD)]) as server:
        make_judge(f"kscore:judge@{server.base_url}?rubric=official:{tmp_path}").score(
            {**CASE, "gt_image": str(_png(tmp_path, "gt.png", (64, 64)))}, _png(tmp_path, "g.png", (64, 64)), None)
        assert server.requests[0]["messages"][0]["content"] == "Stand-in evaluator rubric."
    with pytest.raises(ValueError, match="git clone https://github.com/MeiGen-AI/GenEvolve"):
        make_judge(f"kscore:judge@http://127.0.0.1:9/v1?rubric=official:{tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="rubric file not found"):
        make_judge("kscore:judge@http://127.0.0.1:9/v1", settings=Settings(judge_rubric=str(tmp_path / "x.txt")))


# ---------------------------------------------------------------- rubric=official: the official evaluator's call

def _official_copy(tmp_path):
    script = tmp_path / "copy" / "scripts" / "evaluate_images.py"
    script.parent.mkdir(parents=True)
    script.write_text('SYSTEM_PROMPT = r"""Stand-in evaluator rubric."""\n')
    return tmp_path / "copy"


def _official_judge(tmp_path, server, extra=""):
    return make_judge(f"kscore:judge@{server.base_url}?rubric=official:{_official_copy(tmp_path)}{extra}")


def _decode(uri):
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_official_rubric_sends_the_official_evaluators_message(tmp_path):
    gen = tmp_path / "gen.png"
    Image.new("RGBA", (5000, 100), (0, 0, 0, 0)).save(gen)  # transparent and wider than 4096
    gt = _png(tmp_path, "gt.png", (300, 200))
    case = {"id": 17, "question": '  A shop sign that reads "OPEN".\n', "gt_image": str(gt)}
    with ChatServer([json.dumps(GOOD)]) as server:
        s = _official_judge(tmp_path, server).score(case, gen, None)
        body = server.requests[0]
    assert s.status == "scored" and s.details["rubric"] == "official"
    assert (body["temperature"], body["max_tokens"]) == (0.0, 8192) and "stream" not in body
    assert body["messages"][0] == {"role": "system", "content": "Stand-in evaluator rubric."}
    parts = body["messages"][1]["content"]
    assert parts[0] == {"type": "text", "text": (
        'Sample id: 17\n\nTask prompt (image requirement):\nA shop sign that reads "OPEN".\n\n'
        "Image 1: the **generated image** (to be evaluated).\nImage 2: the **ground-truth reference image**.\n\n"
        "Output a single JSON object with the three scores and a short rationale.")}
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"]
    first, second = _decode(parts[1]["image_url"]["url"]), _decode(parts[2]["image_url"]["url"])
    assert first.size == (4096, 81) and first.getpixel((10, 10)) == (255, 255, 255)  # alpha flattened on white
    assert second.size == (300, 200)
    assert len(body) == 4  # model, messages, temperature, max_tokens: nothing else


def test_official_rubric_asks_again_after_an_unreadable_reply(tmp_path):
    case = {**CASE, "gt_image": str(_png(tmp_path, "gt.png", (64, 64)))}
    gen = _png(tmp_path, "g.png", (64, 64))
    with ChatServer(["", "The image looks fine to me.", "```json\n" + json.dumps(GOOD) + "\n```"]) as server:
        s = _official_judge(tmp_path, server).score(case, gen, None)
        assert len(server.requests) == 3
    assert s.status == "scored" and s.details["asks"] == 3 and s.overall == 0.75
    with ChatServer(["", "no json here", json.dumps(GOOD)]) as server:
        s = _official_judge(tmp_path / "capped", server, "&asks=2").score(case, gen, None)
        assert len(server.requests) == 2
    assert s.status == "failed" and "asked 2 times" in s.error
    # Our rubric fails an unreadable reply at once.
    with ChatServer(["", json.dumps(GOOD)]) as server:
        s = make_judge(f"kscore:judge@{server.base_url}").score(case, gen, None)
        assert len(server.requests) == 1 and s.status == "failed"


# Replies the official evaluator reads differently from our default reading, with its result:
# (faithfulness, visual_correctness, text_accuracy, aesthetics, overall) or the failure.
OFFICIAL_READINGS = [
    (json.dumps({"Faithfulness": 1, "Visual Correctness": 1, "Text Accuracy": 1, "Aesthetics": 1}),
     (0.0, 0.0, 0.0, 0.0, 0.0)),  # other key spellings count 0
    (json.dumps({"scores": {"faithfulness": 1, "visual_correctness": 1, "text_accuracy": 1, "aesthetics": 1}}),
     (0.0, 0.0, 0.0, 0.0, 0.0)),  # nested scores count 0
    (json.dumps({"rationale": "Looks right."}), (0.0, 0.0, 0.0, 0.0, 0.0)),
    (json.dumps({**GOOD, "faithfulness": "1/1"}), "could not convert string to float: '1/1'"),
    (json.dumps({**GOOD, "aesthetics": "NaN"}), (1.0, 0.5, 1.0, 1.0, 0.8)),
    (json.dumps({**GOOD, "visual_correctness": 0.33}), (1.0, 0.33, 1.0, 0.5, 0.68)),
    (json.dumps({**GOOD, "text_accuracy": "N/A", "text_accuracy_na": False}), (1.0, 0.5, 0.5, 0.5, 0.55)),
    ('{"faithfulness": 1, "visual_correctness": 0.5, "text_accuracy": 1, "aesthetics": 0.5,}',
     (1.0, 0.5, 1.0, 0.5, 0.75)),  # a trailing comma
    ('{"faithfulness": 1, "visual_correctness": 1, "text_accuracy_na": true, "aesthetics": 0.5, "rationale": "cut',
     (1.0, 1.0, 0.5, 0.5, 0.75)),  # truncated: fields one by one
]


@pytest.mark.parametrize("reply,expected", OFFICIAL_READINGS)
def test_official_rubric_reads_replies_as_the_official_evaluator(reply, expected, tmp_path):
    case = {**CASE, "gt_image": str(_png(tmp_path, "gt.png", (64, 64)))}
    with ChatServer([reply]) as server:
        s = _official_judge(tmp_path, server).score(case, _png(tmp_path, "g.png", (64, 64)), None)
    if isinstance(expected, str):
        assert s.status == "failed" and s.error == expected
    else:
        assert s.status == "scored", s.error
        assert (s.faithfulness, s.visual_correctness, s.text_accuracy, s.aesthetics, s.overall) == expected
