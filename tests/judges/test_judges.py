"""Judges against a real chat-completions server on 127.0.0.1 (tests/helpers/chat_server.py)."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from helpers.chat_server import ChatServer, Reply  # noqa: E402

from genevolve.judges import Scores, make_judge  # noqa: E402
from genevolve.judges.base import kscore_overall  # noqa: E402
from genevolve.judges.chat_endpoint import ChatEndpoint, parse_json_reply  # noqa: E402
from genevolve.judges.kscore import KScoreJudge, parse_kscore_reply  # noqa: E402
from genevolve.judges.rate_limit import RateLimiter  # noqa: E402
from genevolve.judges.sufficiency import SufficiencyJudge, local_sufficiency, score_program  # noqa: E402
from genevolve.judges.wise import WISE_WEIGHTS, WiseJudge, wise_category, wise_overall  # noqa: E402
from genevolve.program import Program, derive_constraints  # noqa: E402
from genevolve.trajectory import Step, Trajectory  # noqa: E402

GOOD = {"constraints": ["title PARIS", "two backpackers"], "rationale": "ok",
        "faithfulness": 1, "visual_correctness": 0.5, "text_accuracy": 1, "text_accuracy_na": False,
        "aesthetics": 0.5}
CASE = {"id": "c1", "question": 'A poster of the Eiffel Tower with the title "PARIS"', "gt_image": None,
        "category": "architecture_landmark"}


@pytest.fixture
def image(tmp_path):
    img = Image.new("RGB", (64, 48), (200, 30, 30))
    path = tmp_path / "gen.png"
    img.save(path)
    return path


def endpoint(server, **kw):
    kw.setdefault("max_retries", 3)
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5)
    return ChatEndpoint("judge-vlm", server.base_url, api_key="test", limiter=kw.pop("limiter", RateLimiter(None)), **kw)


def image_parts(body):
    return [p for p in body["messages"][-1]["content"] if p.get("type") == "image_url"]


def test_kscore_well_formed_with_and_without_gt(image, tmp_path):
    gt = tmp_path / "gt.png"
    Image.new("RGB", (32, 32), (0, 0, 255)).save(gt)
    with ChatServer([json.dumps(GOOD), json.dumps(GOOD)]) as server:
        judge = KScoreJudge(endpoint(server))
        s = judge.score(CASE, image, None)
        s_gt = judge.score({**CASE, "gt_image": str(gt)}, Image.open(image), None)
    assert s.status == "scored" and s_gt.status == "scored"
    assert (s.faithfulness, s.visual_correctness, s.text_accuracy, s.aesthetics) == (1, 0.5, 1, 0.5)
    assert s.overall == pytest.approx(0.1 * 1 + 0.4 * 0.5 + 0.4 * 1 + 0.1 * 0.5)
    assert s.rationale.startswith("Constraints: title PARIS; two backpackers")
    no_gt, with_gt = server.requests
    assert len(image_parts(no_gt)) == 1 and len(image_parts(with_gt)) == 2
    # A small PNG file goes as is (exact pixels, no re-encode); a PIL image is sent as JPEG.
    assert image_parts(no_gt)[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert image_parts(with_gt)[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert image_parts(with_gt)[1]["image_url"]["url"].startswith("data:image/png;base64,")
    text_no_gt = " ".join(p["text"] for p in no_gt["messages"][-1]["content"] if p["type"] == "text")
    text_gt = " ".join(p["text"] for p in with_gt["messages"][-1]["content"] if p["type"] == "text")
    assert "NO ground-truth" in text_no_gt and "Image 2 (ground truth)" in text_gt
    assert "Eiffel Tower" in text_gt and s_gt.details["has_gt"] is True


@pytest.mark.parametrize("reply", [
    "```json\n" + json.dumps(GOOD) + "\n```",
    "Here is my grading:\n" + json.dumps(GOOD, indent=1).replace('"aesthetics": 0.5', '"aesthetics": 0.5,') + "\nThanks!",
    "<think>let me look closely</think>\n```\n" + json.dumps(GOOD)[:-1] + ",}\n```",
    json.dumps({**GOOD, "faithfulness": "1.0", "visual_correctness": "0.5"}),
])
def test_kscore_recovers_sloppy_json(reply, image):
    with ChatServer([reply]) as server:
        s = KScoreJudge(endpoint(server)).score(CASE, image, None)
    assert s.status == "scored", s.error
    assert s.overall == pytest.approx(kscore_overall(1, 0.5, 1, 0.5))


def test_text_accuracy_na_counts_half():
    s = parse_kscore_reply(json.dumps({**GOOD, "text_accuracy": 0, "text_accuracy_na": True}))
    assert s.status == "scored" and s.text_accuracy == 0.5
    assert s.overall == pytest.approx(kscore_overall(1, 0.5, 0.5, 0.5))
    s2 = parse_kscore_reply(json.dumps({**GOOD, "text_accuracy": "N/A"}))
    assert s2.text_accuracy == 0.5 and s2.details["text_accuracy_na"] is True


@pytest.mark.parametrize("reply,reason", [
    # Missing fields and off-scale levels are forgiven (see test_official_judge.py); these are not.
    (json.dumps({"rationale": "no grades", "verdict": "fine"}), "none of the score fields"),
    (json.dumps({**GOOD, "faithfulness": "great"}), "faithfulness is not a number"),
    ("I cannot grade this image.", "unreadable judge reply"),
    ("", "unreadable judge reply: empty reply"),
])
def test_kscore_unscorable_is_failed_with_reason(reply, reason, image):
    with ChatServer([reply]) as server:
        s = KScoreJudge(endpoint(server)).score(CASE, image, None)
    assert s.status == "failed" and s.overall is None
    assert reason in s.error


def test_kscore_failed_without_image_or_with_missing_gt(tmp_path, image):
    with ChatServer([]) as server:
        judge = KScoreJudge(endpoint(server))
        assert "no image" in judge.score(CASE, None, None).error
        s = judge.score({**CASE, "gt_image": str(tmp_path / "nope.png")}, image, None)
    assert s.status == "failed" and "ground-truth image listed but not found" in s.error
    assert server.requests == []


def test_429_storm_is_retried_then_scored(image):
    replies = [Reply(status=429, retry_after_ms=20)] * 4 + [json.dumps(GOOD)]
    with ChatServer(replies) as server:
        ep = endpoint(server, max_retries=6)
        s = KScoreJudge(ep).score(CASE, image, None)
    assert s.status == "scored"
    assert ep.stats["rate_limited"] == 4 and len(server.requests) == 5


def test_persistent_429_fails_with_reason(image):
    with ChatServer(lambda body: Reply(status=429, retry_after_ms=5)) as server:
        s = KScoreJudge(endpoint(server, max_retries=2)).score(CASE, image, None)
    assert s.status == "failed" and "rate limited" in s.error and len(server.requests) == 3


def test_rpm_limiter_keeps_a_rate_limited_server_happy(image):
    """8 threads, 12 cases, a server that refuses more than 4 requests per window: with the
    shared limiter at that rate there is no 429 storm and every case is scored."""
    window, limit = 1.0, 4
    arrivals: deque = deque()
    refused = []
    lock = threading.Lock()

    def reply(body):
        with lock:
            now = time.monotonic()
            while arrivals and now - arrivals[0] > window * 0.6:  # slack for transit jitter on a busy machine
                arrivals.popleft()
            if len(arrivals) >= limit:
                refused.append(now)
                return Reply(status=429, retry_after_ms=50)
            arrivals.append(now)
            return json.dumps(GOOD)

    with ChatServer(reply) as server:
        limited = KScoreJudge(endpoint(server, limiter=RateLimiter(limit, window)))
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: limited.score({**CASE, "id": str(i)}, image, None), range(12)))
        assert all(r.status == "scored" for r in results)
        assert refused == []
        # Without the limiter the same load does trigger refusals (the test can fail).
        unlimited = KScoreJudge(endpoint(server, max_retries=8))
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: unlimited.score({**CASE, "id": str(i)}, image, None), range(12)))
        assert refused


def test_rate_limiter_window():
    lim = RateLimiter(3, 0.3)
    t0 = time.monotonic()
    stamps = []
    for _ in range(7):
        lim.acquire()
        stamps.append(time.monotonic() - t0)
    assert stamps[2] < 0.1 and stamps[3] >= 0.29 and stamps[6] >= 0.59


def test_timeout_then_success_and_timeout_failure(image):
    with ChatServer([Reply(json.dumps(GOOD), latency=1.5), json.dumps(GOOD)]) as server:
        ep = endpoint(server, timeout_s=0.3, max_retries=2)
        s = KScoreJudge(ep).score(CASE, image, None)
    assert s.status == "scored" and ep.stats["timeouts"] == 1
    with ChatServer(lambda body: Reply(json.dumps(GOOD), latency=1.5)) as server:
        s = KScoreJudge(endpoint(server, timeout_s=0.2, max_retries=1)).score(CASE, image, None)
    assert s.status == "failed" and "timed out" in s.error


def test_client_error_is_not_retried(image):
    with ChatServer([Reply(status=404, content="model not found")] * 3) as server:
        s = KScoreJudge(endpoint(server)).score(CASE, image, None)
    assert s.status == "failed" and "404" in s.error and len(server.requests) == 1


# ---------------------------------------------------------------- WISE

WISE_CASE = {"id": "wise_1", "question": "The tower built for the 1889 World's Fair in Paris",
             "explanation": "The Eiffel Tower: wrought-iron lattice tower", "category": "Cultural knowledge"}


@pytest.mark.parametrize("reply,expected", [
    ('{"rationale": "it is the Eiffel Tower", "score": 1}', 1.0),
    ('```json\n{"rationale": "a generic tower", "score": 0,}\n```', 0.0),
    ('Verdict follows {"score": "1"}', 1.0),
])
def test_wise_scores(reply, expected, image):
    with ChatServer([reply]) as server:
        s = WiseJudge(endpoint(server)).score(WISE_CASE, image, None)
    assert s.status == "scored" and s.overall == expected
    assert s.details["wise_category"] == "culture"
    text = server.requests[0]["messages"][-1]["content"][0]["text"]
    assert "wrought-iron lattice" in text and "1889" in text


@pytest.mark.parametrize("reply,reason", [
    ('{"rationale": "hmm"}', "missing field 'score'"),
    ('{"score": 2}', "not 0 or 1"),
    ("no idea", "unreadable"),
])
def test_wise_unscorable(reply, reason, image):
    with ChatServer([reply]) as server:
        s = WiseJudge(endpoint(server)).score(WISE_CASE, image, None)
    assert s.status == "failed" and reason in s.error


def test_wise_needs_explanation_and_weights(image):
    with ChatServer([]) as server:
        s = WiseJudge(endpoint(server)).score({**WISE_CASE, "explanation": ""}, image, None)
    assert s.status == "failed" and "explanation" in s.error
    assert sum(WISE_WEIGHTS.values()) == pytest.approx(1.0)
    means = {"culture": 0.5, "time": 1.0, "space": 0.0, "biology": 0.5, "physics": 0.25, "chemistry": 0.75}
    assert wise_overall(means) == pytest.approx(0.4 * 0.5 + 0.12 * (1.0 + 0.0 + 0.5 + 0.25 + 0.75))
    assert wise_overall({"culture": 1.0}) is None
    assert [wise_category(c) for c in ("Cultural knowledge", "Spatio-temporal: Time", "Natural science - Chemistry")] \
        == ["culture", "time", "chemistry"]
    assert wise_category("Spatio-Temporal Reasoning Space") == "space" and wise_category("Typography") is None


# ---------------------------------------------------------------- specs, sufficiency, local

def test_make_judge_specs():
    j = make_judge("kscore:gemini-2.5-flash@http://127.0.0.1:9/v1?timeout=7&retries=1&rpm=5")
    assert isinstance(j, KScoreJudge) and j.endpoint.base_url == "http://127.0.0.1:9/v1"
    assert j.endpoint.timeout_s == 7 and j.endpoint.max_retries == 1 and j.endpoint.limiter.max_calls == 5
    assert isinstance(make_judge("wise:qwen@http://127.0.0.1:9/v1"), WiseJudge)
    assert make_judge("sufficiency").endpoint is None
    assert make_judge("sufficiency:m@http://127.0.0.1:9/v1").endpoint.model == "m"
    assert type(make_judge("local")).__name__ == "LocalJudge"
    for bad in ("kscore", "kscore:model", "banana"):
        with pytest.raises(ValueError):
            make_judge(bad)


def test_unreachable_endpoint_fails_not_raises(image):
    j = make_judge("kscore:m@http://127.0.0.1:9/v1?retries=0&timeout=1")
    s = j.score(CASE, image, None)
    assert s.status == "failed" and "cannot reach" in s.error


def _trajectory(request, prompt, *, search_text="", skills=(), refs=(), images=()):
    """A trajectory as the loop records one; ``images``: (img_id, title) of pictures it was shown."""
    from genevolve.trajectory import ImageRef

    traj = Trajectory(request=request)
    traj.images = [ImageRef(img_id=i, path=f"/nonexistent/{i}.jpg", title=t) for i, t in images]
    rnd = 1
    if search_text:
        traj.steps.append(Step(round=rnd, kind="tool_call", tool_name="search",
                               tool_arguments={"queries": ["x"]}, tool_text=search_text))
        rnd += 1
    for s in skills:
        traj.steps.append(Step(round=rnd, kind="tool_call", tool_name="query_knowledge",
                               tool_arguments={"skill_name": s}, tool_text="..."))
        rnd += 1
    program = Program(gen_prompt=prompt, reference_images=[{"img_id": r} for r in refs])
    program.constraints = derive_constraints(request, program)
    traj.program = program
    return traj


def test_local_sufficiency_checks():
    request = 'A poster of the Eiffel Tower with the title "PARIS" and two backpackers in front of the tower'
    case = {"question": request, "category": "architecture_landmark"}
    evidence = ("1. **Eiffel Tower** — The Eiffel Tower, completed in 1889 by Gustave Eiffel, is a wrought-iron "
                "lattice tower.")
    full = _trajectory(request, 'The Eiffel Tower as in the first reference image; the Eiffel Tower, completed in '
                       '1889 by Gustave Eiffel, is a wrought-iron lattice tower. Title "PARIS"; exactly two '
                       'backpackers standing in front of the tower.',
                       search_text=evidence, skills=["text_rendering", "quantity_counting", "spatial_layout"],
                       refs=["IMG_001"], images=[("IMG_001", "Eiffel Tower at dusk")])
    s = local_sufficiency(case, full)
    assert s.status == "scored" and s.sufficiency == 1.0, s.rationale
    weak = _trajectory(request, "A tower poster, see IMG_001 and the second reference image.",
                       search_text=evidence, refs=["IMG_001"], images=[("IMG_001", "Eiffel Tower at dusk")])
    w = local_sufficiency(case, weak)
    assert w.sufficiency == 0.0, w.rationale
    assert w.details["checks"] == {k: False for k in w.details["checks"]}
    # Program only: the trajectory checks cannot be made and are reported as unchecked.
    p = score_program(case, full.program)
    assert p.sufficiency == 0.5 and set(p.details["unchecked"]) == {"facts_carried", "skills_applied"}
    assert score_program(case, full.to_dict()).sufficiency == 1.0
    assert score_program(case, None).status == "failed"
    assert s.sufficiency in (0, 0.25, 0.5, 0.75, 1.0)


SNOOKER = ("The snooker final at the Crucible Theatre in Sheffield, the champion lifting the trophy under a "
           "scoreboard that reads '147'.")
SNOOKER_SEARCH = ("1. **Crucible Theatre** — The Crucible Theatre in Sheffield has hosted the World Snooker "
                  "Championship every year since 1977.\n"
                  "2. **Golden Gate Bridge** — Its main span is 1,280 metres, the longest suspension span in the "
                  "world from 1937 until 1964.")


def test_facts_count_only_when_their_source_is_what_the_request_names():
    case = {"question": SNOOKER, "category": "event"}
    base = "A snooker final at the Crucible Theatre in Sheffield, a champion lifting the trophy, a scoreboard reading '147'."
    relevant = base + (" The Crucible Theatre in Sheffield has hosted the World Snooker Championship every year "
                       "since 1977.")
    pasted = relevant + " Its main span is 1,280 metres, the longest suspension span in the world from 1937 until 1964."
    scores = {}
    for name, prompt in (("relevant", relevant), ("pasted", pasted), ("none", base)):
        traj = _trajectory(SNOOKER, prompt, search_text=SNOOKER_SEARCH, skills=["text_rendering"])
        scores[name] = local_sufficiency(case, traj, library=[])
    assert scores["relevant"].details["checks"]["facts_carried"], scores["relevant"].rationale
    assert not scores["pasted"].details["checks"]["facts_carried"]
    assert "Golden Gate Bridge" in scores["pasted"].rationale
    # Pasting an irrelevant fact scores below adding none; the search found a relevant one, so
    # carrying nothing is not enough either.
    assert scores["pasted"].sufficiency < scores["relevant"].sufficiency
    assert not scores["none"].details["checks"]["facts_carried"]
    # When the searches found nothing about the request, saying nothing passes.
    unrelated = _trajectory(SNOOKER, base, search_text=SNOOKER_SEARCH.split("\n")[1], skills=["text_rendering"])
    assert local_sufficiency(case, unrelated, library=[]).details["checks"]["facts_carried"]
    # No search at all on a knowledge case fails.
    assert not local_sufficiency(case, _trajectory(SNOOKER, base), library=[]).details["checks"]["facts_carried"]


def test_the_graded_credit_pays_research_in_proportion():
    """The checks call half-done research a fail, like none; the graded credit the GRPO reward pays
    ranks none < half < all: a skill of three, a search that found the venue but carried nothing,
    a matching picture shown and left unbound each earn part."""
    request = 'A poster of the Eiffel Tower with the title "PARIS" and two backpackers in front of the tower'
    case = {"question": request, "category": "architecture_landmark"}
    evidence = "1. **Eiffel Tower** — The Eiffel Tower, completed in 1889 by Gustave Eiffel, is a wrought-iron tower."
    shown = [("IMG_001", "Eiffel Tower at dusk")]
    copy = 'A poster of the Eiffel Tower with the title "PARIS" and two backpackers in front of the tower.'
    none = _trajectory(request, copy)
    applied = copy[:-1] + ", the title in bold block letters."  # the one skill read reaches the program
    half = _trajectory(request, applied, search_text=evidence, skills=["text_rendering"], images=shown)
    full = _trajectory(request, copy[:-1] + " as in the first reference image; the Eiffel Tower, completed in "
                       "1889 by Gustave Eiffel, is a wrought-iron tower.", search_text=evidence,
                       skills=["text_rendering", "quantity_counting", "spatial_layout"], refs=["IMG_001"], images=shown)
    library = [("Eiffel Tower at dusk", "the tower")]  # a picture to find: not searching for it costs
    scores = {n: local_sufficiency(case, t, library=library) for n, t in (("none", none), ("half", half), ("full", full))}
    checks = {n: s.details["checks"] for n, s in scores.items()}
    credit = {n: s.details["credit"] for n, s in scores.items()}
    # Pass/fail is unchanged: half-done research fails the three research checks, like none.
    assert scores["none"].sufficiency == scores["half"].sufficiency == 0.25
    assert not any(checks["half"][k] for k in ("facts_carried", "ordinal_references", "skills_applied"))
    assert credit["none"] == {"facts_carried": 0.0, "ordinal_references": 0.0, "skills_applied": 0.0,
                              "constraints_executable": 1.0}
    assert credit["half"]["facts_carried"] == 0.5 and credit["half"]["ordinal_references"] == 0.5
    assert credit["half"]["skills_applied"] == pytest.approx(1 / 3)
    # Read but not applied: the same skill with the request handed on as written earns nothing.
    read_only = _trajectory(request, copy, search_text=evidence, skills=["text_rendering"], images=shown)
    assert local_sufficiency(case, read_only, library=library).details["credit"]["skills_applied"] == 0.0
    assert scores["full"].details["graded"] == scores["full"].sufficiency == 1.0, scores["full"].rationale
    assert scores["none"].details["graded"] < scores["half"].details["graded"] < scores["full"].details["graded"]
    # With nothing to find, not searching for pictures passes.
    assert local_sufficiency(case, none, library=[]).details["credit"]["ordinal_references"] == 1.0
    # A dropped constraint costs its share; a leak the whole check.
    dropped = _trajectory(request, 'A poster of the Eiffel Tower with the title "PARIS".')
    assert 0 < local_sufficiency(case, dropped).details["credit"]["constraints_executable"] < 1
    leaked = _trajectory(request, "I have what I need. " + copy)
    assert local_sufficiency(case, leaked).details["credit"]["constraints_executable"] == 0.0


def test_a_decoding_loop_costs_the_constraints_check():
    request = "a photo of a bench"
    once = _trajectory(request, "A photo of a bench. High detail, coherent single image.")
    looped = _trajectory(request, "A photo of a bench." + " High detail, coherent single image." * 4)
    assert local_sufficiency({"question": request}, once).details["credit"]["constraints_executable"] == 1.0
    s = local_sufficiency({"question": request}, looped)
    assert s.details["credit"]["constraints_executable"] == 0.0 and "said more than once" in s.rationale


def test_a_colour_nobody_gave_costs_the_constraints_check_unless_research_gave_it():
    """The 2026-12-05 adapters wrote the attribute-binding sentence where the request binds nothing:
    "the bench is blue" on "a photo of a bench"."""
    request = "a photo of a bench"
    plain = _trajectory(request, "A photo of a bench in a park.")
    blue = _trajectory(request, "A photo of a bench. Bind each attribute to its own object: the bench is blue.")
    assert local_sufficiency({"question": request}, plain).details["credit"]["constraints_executable"] == 1.0
    s = local_sufficiency({"question": request}, blue)
    assert s.details["credit"]["constraints_executable"] == 0.0 and "blue bench" in s.rationale
    # A colour the bound picture's title gives the thing is research, not invention.
    seen = _trajectory(request, "A photo of a bench: the bench is blue, as in the first reference image.",
                       refs=["IMG_001"], images=[("IMG_001", "Blue bench in a park")])
    assert local_sufficiency({"question": request}, seen).details["checks"]["constraints_executable"]


def test_markup_in_the_prompt_costs_the_constraints_check():
    request = "a motorcycle"
    garbled = _trajectory(request, "A motorcycle= science= layout: place the motorcycle in a garage.")
    s = local_sufficiency({"question": request}, garbled)
    assert s.details["credit"]["constraints_executable"] == 0.0 and "motorcycle=" in s.rationale
    plain = _trajectory(request, "A motorcycle parked in a garage.")
    assert local_sufficiency({"question": request}, plain).details["credit"]["constraints_executable"] == 1.0


def test_the_grpo_reward_pays_the_graded_credit():
    pytest.importorskip("fontTools")
    from genevolve.training.rewards import HybridReward

    request = 'A poster of the Eiffel Tower with the title "PARIS"'
    case = {"question": request, "category": "architecture_landmark"}
    search = "1. **Eiffel Tower** — The Eiffel Tower is a wrought-iron lattice tower in Paris."
    score = HybridReward(renderer="layout", judge="local", sufficiency="sufficiency", w=0.5)
    traj = _trajectory(request, request + ", the title in bold block letters across the top.", search_text=search,
                       skills=["text_rendering"])
    reward = score(case, traj)
    details = reward.info["sufficiency_details"]
    assert details["graded"] > sum(details["checks"].values()) / 4  # the found-but-not-carried half
    assert reward.components["r_text"] == pytest.approx(details["graded"])
    # The same research handed on as the request, as written: no text reward at all.
    copy = score(case, _trajectory(request, request + ".", search_text=search, skills=["text_rendering"]))
    assert copy.info["sufficiency_details"]["copy"] and copy.components["r_text"] == 0.0


def test_references_must_be_of_what_the_request_names_and_bound_when_one_is_at_hand():
    request = "A Falcon 9 rocket on its launch pad at dawn, steam rising."
    case = {"question": request, "category": "vehicle"}
    prompt = "The Falcon 9 rocket of the first reference image on its launch pad at dawn, steam rising."
    right = _trajectory(request, prompt, refs=["IMG_001"], images=[("IMG_001", "Falcon 9 rocket on the launch pad")])
    wrong = _trajectory(request, prompt, refs=["IMG_001"], images=[("IMG_001", "Espresso cup on a saucer")])
    unbound = _trajectory(request, "A Falcon 9 rocket on its launch pad at dawn, steam rising.")
    library = [("Falcon 9 rocket on the launch pad", "a rocket"), ("Espresso cup on a saucer", "coffee")]
    check = lambda t, lib: local_sufficiency(case, t, library=lib).details["checks"]["ordinal_references"]
    assert check(right, library)
    assert not check(wrong, library)
    assert not check(unbound, library)  # the library holds a matching picture and none is bound
    assert check(unbound, [("Espresso cup on a saucer", "coffee")])  # nothing matching to bind
    # The shipped library is what the local judge looks in by default.
    assert not SufficiencyJudge().score_program(case, unbound).details["checks"]["ordinal_references"]


def test_a_prompt_that_points_at_a_picture_it_does_not_bind_loses_the_reference_check():
    """GRPO+SDL's adapter wrote the user-picture line ("Match the subject, look and identity of the
    image.") on requests that gave no picture, and the reward let it pass: the renderer is told to
    follow a picture it never gets."""
    case = {"question": "a photo of a bench", "category": "single_object"}
    plain = _trajectory(case["question"], "A photo of a bench.")
    phantom = _trajectory(case["question"], "A photo of a bench. Match the subject, look and identity of the image.")
    check = lambda t: local_sufficiency(case, t, library=[]).details["checks"]["ordinal_references"]
    assert check(plain) and not check(phantom)
    assert "points at a picture it does not bind" in local_sufficiency(case, phantom, library=[]).rationale


def test_what_repair_leaves_of_an_ordinal_with_nothing_bound_still_loses_the_reference_check():
    """GRPO's rollouts (no grammar) wrote "the first reference image" and bound nothing; the repair
    step clamps an ordinal past the last reference to "the reference style", and that passed the
    check: 0.917 for a program that points the renderer at a picture it never gets."""
    from genevolve.program import Program, repair_program

    case = {"question": "A violin made of brushed steel, in soft overcast light.", "category": "material"}
    written = Program(gen_prompt=case["question"] + " Match the appearance of the violin shown in the first "
                      "reference image. High detail, coherent single image.", reference_images=[])
    repaired, notes = repair_program(written, known_ids=set())
    assert "reference style" in repaired.gen_prompt and notes
    traj = _trajectory(case["question"], repaired.gen_prompt)
    scores = local_sufficiency(case, traj, library=[])
    assert not scores.details["checks"]["ordinal_references"]
    assert "the reference style" in scores.rationale
    assert local_sufficiency(case, _trajectory(case["question"], case["question"] + " High detail, coherent single "
                             "image."), library=[]).details["checks"]["ordinal_references"]


def test_a_library_picture_of_what_any_request_names_is_expected_bound():
    """Not only on knowledge cases: the offline library holds no knowledge subject, so a rule for
    those alone never asked for a library picture. The teacher binds Chelsea for "a cat" on a
    spatial request, and the check now pays for that (and half for the picture found, left out)."""
    case = {"question": "A cat to the left of a red ball.", "category": "spatial_relation"}
    library = [("Chelsea the cat", "A ginger tabby cat's face."), ("Espresso cup on a saucer", "coffee")]
    credit = lambda t: local_sufficiency(case, t, library=library).details["credit"]["ordinal_references"]
    bound = _trajectory(case["question"], "The cat of the first reference image to the left of a red ball.",
                        refs=["IMG_001"], images=[("IMG_001", "Chelsea the cat")])
    shown = _trajectory(case["question"], "A cat to the left of a red ball.", images=[("IMG_001", "Chelsea the cat")])
    unsearched = _trajectory(case["question"], "A cat to the left of a red ball.")
    assert (credit(bound), credit(shown), credit(unsearched)) == (1.0, 0.5, 0.0)
    assert credit(unsearched) == 0.0 and local_sufficiency(case, unsearched, library=library[1:]).details[
        "credit"]["ordinal_references"] == 1.0  # nothing in the library to bind


def test_a_copy_of_the_request_applies_no_skill_it_read():
    """The eval counts a copy against clean; the reward agrees where skills are needed: reading
    the counting skill and then handing on "three red apples" as written earns no skill credit."""
    request = "three red apples in a row"
    case = {"question": request, "category": "counting"}
    skills = ["quantity_counting", "spatial_layout", "attribute_binding"]
    copy = local_sufficiency(case, _trajectory(request, "Three red apples in a row.", skills=skills))
    assert not copy.details["checks"]["skills_applied"] and copy.details["credit"]["skills_applied"] == 0.0
    assert "request as written" in copy.rationale
    applied = local_sufficiency(case, _trajectory(
        request, "Three red apples in a row, exactly 3, evenly spaced left to right, each fully visible.",
        skills=skills))
    assert applied.details["checks"]["skills_applied"] and applied.details["credit"]["skills_applied"] == 1.0


def test_a_copy_earns_no_text_reward_where_skills_are_needed_and_less_than_a_program_that_slips_once():
    """GRPO learns what wins inside a group. When a copy lost only the skill check's quarter it
    scored level with a program that applied the skills and slipped once elsewhere, so the groups
    taught the copy; now a copy's graded mean is 0 where skills are needed, and still 1 where the
    request needs none (a copy is then all there is to write)."""
    request = "three red apples in a row"
    case = {"question": request, "category": "counting"}
    skills = ["quantity_counting", "spatial_layout", "attribute_binding"]
    copy = local_sufficiency(case, _trajectory(request, "Three red apples in a row.", skills=skills))
    assert copy.details["copy"] and copy.details["graded"] == 0.0
    # Applies the guidance but invents a count of pears nobody asked for: one check lost.
    slipped = local_sufficiency(case, _trajectory(
        request, "Three red apples in a row, exactly 3, evenly spaced left to right, each fully visible, "
                 "beside exactly 2 pears.", skills=skills))
    assert not slipped.details["copy"] and not slipped.details["checks"]["constraints_executable"]
    assert slipped.details["graded"] == 0.75
    bare_request = "a bench"
    bare = local_sufficiency({"question": bare_request}, _trajectory(bare_request, "A bench."))
    assert bare.details["needed_skills"] == [] and not bare.details["copy"] and bare.details["graded"] == 1.0


def test_the_skills_the_teacher_read_are_needed_where_the_case_records_them():
    """41 of 175 RL prompts needed no skill by their category and constraints, so a copy passed
    the check where the teacher read two skills and carried their guidance; the RL prompt's record
    of the teacher's run now sets what is needed."""
    request = "A portrait of Marie Curie in her laboratory, warm lamp light."
    bare = {"question": request, "category": "public_figure"}
    taught = {**bare, "teacher": {"skills": ["anatomy_body_coherence", "aesthetic_drawing"]}}
    copy = _trajectory(request, "A portrait of Marie Curie in her laboratory, warm lamp light.")
    credit = lambda case, t: local_sufficiency(case, t).details["credit"]["skills_applied"]
    assert credit(bare, copy) == 1.0 and credit(taught, copy) == 0.0
    half = _trajectory(request, "A portrait of Marie Curie in her laboratory, warm lamp light. Natural human "
                                "proportions, five fingers per hand.", skills=["anatomy_body_coherence"])
    both = _trajectory(request, half.program.gen_prompt, skills=["anatomy_body_coherence", "aesthetic_drawing"])
    assert (credit(taught, half), credit(taught, both)) == (0.5, 1.0)
    assert local_sufficiency(taught, copy).details["needed_skills"] == ["aesthetic_drawing", "anatomy_body_coherence"]


def test_a_picture_in_other_colours_than_asked_is_no_match_to_bind():
    """The teacher leaves out a red motorcycle for "a black motorcycle" (it would repaint it); the
    reference check does not ask for it either, shown or held, and a bound one still fails."""
    case = {"question": "A black motorcycle parked by a diner.", "category": "vehicle"}
    library = [("Red motorcycle in a garage", "A red and black classic road motorcycle on a concrete floor.")]
    check = lambda t: local_sufficiency(case, t, library=library).details["checks"]["ordinal_references"]
    unbound = _trajectory(case["question"], "A black motorcycle parked by a diner.",
                          images=[("IMG_001", "Red motorcycle in a garage")])
    assert check(unbound)
    bound = _trajectory(case["question"], "The black motorcycle of the first reference image parked by a diner.",
                        refs=["IMG_001"], images=[("IMG_001", "Red motorcycle in a garage")])
    assert not check(bound)
    red = {**case, "question": "A red motorcycle parked by a diner."}
    assert not local_sufficiency(red, _trajectory(red["question"], "A red motorcycle parked by a diner."),
                                 library=library).details["checks"]["ordinal_references"]


def test_reasoning_in_the_prompt_fails_the_constraints_check():
    request = 'A sign that says "OPEN"'
    leaked = _trajectory(request, 'I have what I need: 0 fact(s). A shop sign reading "OPEN".', skills=["text_rendering"])
    clean = _trajectory(request, 'A shop sign reading "OPEN".', skills=["text_rendering"])
    assert local_sufficiency({"question": request}, clean).details["checks"]["constraints_executable"]
    s = local_sufficiency({"question": request}, leaked)
    assert not s.details["checks"]["constraints_executable"] and "I have" in s.rationale


def test_llm_sufficiency(image):
    request = 'A sign that says "OPEN"'
    traj = _trajectory(request, 'A shop sign reading "OPEN".', skills=["text_rendering"])
    reply = ('{"rationale": "fine", "facts_carried": true, "ordinal_references": true, '
             '"skills_applied": "false", "constraints_executable": true,}')
    with ChatServer([reply, '{"facts_carried": true}']) as server:
        judge = SufficiencyJudge(endpoint(server))
        s = judge.score_program({"question": request}, traj)
        bad = judge.score({"question": request}, image, traj.program, trajectory=traj)
    assert s.status == "scored" and s.sufficiency == 0.75 and s.constraint_coverage == 1.0
    assert "text_rendering" in server.requests[0]["messages"][-1]["content"]
    assert bad.status == "failed" and "ordinal_references" in bad.error


def _text_image(text, path):
    from matplotlib import font_manager

    img = Image.new("RGB", (640, 240), "white")
    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans:bold"), 72)
    ImageDraw.Draw(img).text((40, 70), text, fill="black", font=font)
    img.save(path)
    return path


def test_local_judge_measures_what_it_can(tmp_path):
    img = _text_image("PARIS", tmp_path / "paris.png")
    request = 'A poster with the title "PARIS"'
    traj = _trajectory(request, 'Poster, title "PARIS" in bold serif.', skills=["text_rendering"])
    judge = make_judge("local")
    good = judge.score({"question": request, "category": "text_layout"}, img, traj.program, trajectory=traj)
    assert good.status == "scored"
    assert good.text_accuracy == 1.0 and good.constraint_coverage == 1.0
    assert good.faithfulness is None and good.visual_correctness is None and good.aesthetics is None
    # The overall covers only what the image showed: here OCR text (no layout report, so no structure).
    assert good.structure is None and good.details["overall_parts"] == ["text_accuracy"]
    assert good.overall == good.text_accuracy and "structure" in good.details["not_measured"]
    traj2 = _trajectory('A poster with the title "LONDON"', 'Poster, title "LONDON".', skills=["text_rendering"])
    wrong = judge.score({"question": 'A poster with the title "LONDON"'}, img, traj2.program, trajectory=traj2)
    assert wrong.status == "scored" and wrong.text_accuracy == 0.0
    assert judge.score({"question": request}, None, traj.program).status == "failed"
    assert judge.score({"question": ""}, img, None).status == "failed"  # neither program nor request


def test_an_image_and_a_request_alone_measure_no_program_dimension(tmp_path):
    """Without a program or trajectory, coverage and sufficiency are "not measured", not guessed."""
    img = _text_image("PARIS", tmp_path / "paris.png")
    s = make_judge("local").score({"question": 'A poster with the title "PARIS"'}, img, None)
    assert s.status == "scored" and s.text_accuracy == 1.0
    assert s.constraint_coverage is None and s.sufficiency is None
    assert s.details["overall_parts"] == ["text_accuracy"] and s.overall == 1.0
    assert "no program" in s.details["not_measured"]["sufficiency"]
    assert "no program" in s.details["not_measured"]["constraint_coverage"]
    for claim in ("facts_carried", "sufficiency=", "constraint_coverage="):
        assert claim not in s.rationale


def test_large_images_are_downscaled(tmp_path):
    import base64
    import io

    from genevolve.judges.base import image_data_uri

    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 1500), (10, 120, 200)).save(big)
    uri = image_data_uri(big, max_side=1024)
    assert uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        assert im.size == (1024, 512)


def test_parse_json_reply_rejects_non_objects():
    with pytest.raises(ValueError):
        parse_json_reply("[1, 2]")
    for not_an_object in ('"just a string"', "42", "null", "no JSON here"):
        with pytest.raises(ValueError):
            parse_json_reply(not_an_object)
    assert parse_json_reply('prose {"a": 1,} more prose') == {"a": 1}
    failed = Scores.failed("kscore", "why", raw="[1, 2]")
    assert (failed.status, failed.error, failed.judge, failed.raw) == ("failed", "why", "kscore", "[1, 2]")
    assert all(v is None for v in failed.metrics().values())


# ---------------------------------------------------------------- the local judge claims only what it measured

FARMERS = ('A poster for a farmers market on Saturday June 7 titled "GREEN ROOTS" with baskets of tomatoes and '
           'three sunflowers')


def test_local_judge_is_null_where_it_cannot_see(tmp_path):
    """No text asked and no layout report (a generative render): nothing measured, overall None, not 0 or 1."""
    img = tmp_path / "photo.png"
    Image.new("RGB", (96, 96), (120, 160, 90)).save(img)
    request = "A photo of the Sydney Opera House at dusk"
    traj = _trajectory(request, "The Sydney Opera House at dusk, white shell roofs, harbour in front.")
    s = make_judge("local").score({"question": request}, img, traj.program, trajectory=traj)
    assert s.status == "scored" and s.overall is None and s.structure is None and s.text_accuracy is None
    assert s.visual_correctness is None and "identity" in s.details["not_measured"]["visual_correctness"]
    assert s.details["not_measured"]["structure"] == "the renderer reports no layout"
    assert s.constraint_coverage == 1.0  # the program still says everything: measured, but kept apart


def test_a_placeholder_panel_does_not_count_as_the_landmark():
    from genevolve.renderers import make_renderer, render_with_report

    request = "A photo of the Sydney Opera House at dusk"
    traj = _trajectory(request, "The Sydney Opera House at dusk, white shell roofs.")
    image, report = render_with_report(make_renderer("layout"), traj.program, size=(512, 512))
    s = make_judge("local").score({"question": request}, image, traj.program, trajectory=traj)
    checks = {c["kind"]: c for c in s.details["structure"]["checks"]}
    assert checks["shown"]["ok"] is False and checks["shown"]["detail"] == "only a placeholder panel"
    assert s.structure == 0.5 and s.overall == 0.5  # its count (one) holds; the thing itself is not shown


def _farmers_trajectory(prompt):
    return _trajectory(FARMERS, prompt, skills=["text_rendering", "quantity_counting"])


FULL = (FARMERS + '. Render the text "GREEN ROOTS" and "Saturday June 7" exactly. Counts: exactly 3 sunflowers, '
        "each fully visible; tomatoes piled in the baskets.")
HALF = 'A green poster titled "GREEN ROOTS".'  # the date, tomatoes, baskets and sunflowers dropped


def test_sufficiency_costs_text_to_print_that_the_request_never_had():
    """The offline reward paid a program for quoting the request's nouns to print (the OCR judge
    reads them back); the sufficiency check now fails it, as it fails a dropped constraint."""
    request = "a photo of a yellow dining table and a pink dog"
    plain = Program.from_answer({"gen_prompt": "A photo of a yellow dining table and a pink dog, soft daylight.",
                                 "reference_images": []})
    printed = Program.from_answer({"gen_prompt": 'A photo of a yellow dining table and a pink dog. Render the '
                                                 'text "yellow dining table", "pink dog" exactly as written.',
                                   "reference_images": []})
    case = {"id": "g", "question": request, "category": "color_attr"}
    good, bad = local_sufficiency(case, plain), local_sufficiency(case, printed)
    assert good.details["checks"]["constraints_executable"] and not bad.details["checks"]["constraints_executable"]
    assert bad.sufficiency < good.sufficiency and "pink dog" in bad.rationale


def test_sufficiency_costs_a_fact_nobody_searched():
    """The adapters write "Facts to respect: …" with nothing searched; the reward paid for it
    because facts_carried passed on any request that needs no knowledge."""
    from genevolve.trajectory import Trajectory

    request = "a photo of a cat"
    plain = Program.from_answer({"gen_prompt": "A photo of a cat, soft daylight.", "reference_images": []})
    claimed = Program.from_answer({"gen_prompt": "A photo of a cat. Facts to respect: The cat is a mammal, not "
                                                 "reptile.", "reference_images": []})
    case = {"id": "c", "question": request, "category": "single_object"}

    def score(program):
        return local_sufficiency(case, Trajectory(request=request, termination="answer", steps=[], program=program))

    good, bad = score(plain), score(claimed)
    assert good.details["checks"]["facts_carried"] and not bad.details["checks"]["facts_carried"]
    assert bad.sufficiency < good.sufficiency and "no search result holds" in bad.rationale


def test_sufficiency_costs_a_count_the_request_never_gave():
    """The SFT adapter wrote "Counts: exactly 2 airplanes" on PartiPrompts' "a small airplane": a
    count nobody set, which the renderer would draw. It costs like a dropped constraint."""
    request = "a small airplane"
    plain = Program.from_answer({"gen_prompt": "A small airplane in a clear sky.", "reference_images": []})
    doubled = Program.from_answer({"gen_prompt": "A small airplane in a clear sky. Counts: exactly 2 airplanes, "
                                                 "each one fully visible.", "reference_images": []})
    case = {"id": "p", "question": request, "category": "Vehicles"}
    good, bad = local_sufficiency(case, plain), local_sufficiency(case, doubled)
    assert good.details["checks"]["constraints_executable"] and not bad.details["checks"]["constraints_executable"]
    assert "2 airplanes" in bad.rationale


def test_sufficiency_costs_a_layout_line_that_places_what_nobody_named():
    """The SFT adapter of 2026-12-07 filled the spatial_layout line with an object of its own; GRPO's
    rollouts keep what the model wrote, so the reward must cost it as the answer check does."""
    request = "a photo of three sinks"
    plain = Program.from_answer({"gen_prompt": "A photo of three sinks. Layout: keep every object fully in frame.",
                                 "reference_images": []})
    placed = Program.from_answer({"gen_prompt": "A photo of three sinks. Layout: place the sink next to the table.",
                                  "reference_images": []})
    case = {"id": "g", "question": request, "category": "counting"}
    good, bad = local_sufficiency(case, plain), local_sufficiency(case, placed)
    assert good.details["checks"]["constraints_executable"] and not bad.details["checks"]["constraints_executable"]
    assert bad.details["credit"]["constraints_executable"] == 0.0 and "sink next to table" in bad.rationale


def test_grpo_reward_separates_a_full_program_from_one_that_drops_half(tmp_path):
    """The offline GRPO reward (layout render + local judge + sufficiency) ranks coverage clearly."""
    pytest.importorskip("fontTools")
    from genevolve.renderers.pictograms import emoji_font_path
    from genevolve.training.rewards import HybridReward

    if emoji_font_path() is None:
        pytest.skip("no colour emoji font (scripts/setup-tests.sh installs fonts-noto-color-emoji)")
    case = {"id": "fm", "question": FARMERS, "category": "text_layout"}
    reward = HybridReward(renderer="layout", judge="local", sufficiency="sufficiency", w=0.5)
    full, half = reward(case, _farmers_trajectory(FULL)), reward(case, _farmers_trajectory(HALF))
    # Full: both texts read back, all three subjects drawn as pictograms with the asked count.
    assert full.components["r_img"] == pytest.approx(1.0), full.info["findings"]
    # Half: its structure is 0 (nothing it dropped is drawn); the texts still read back, since the
    # request's text constraints travel with every program and the layout renderer sets them.
    assert half.components["r_img"] == pytest.approx(0.5), half.info["findings"]
    assert full.components["r_text"] > half.components["r_text"]
    assert full.total - half.total >= 0.35, (full.total, half.total)
    # The same judge on the saved half render: the dropped subjects are reported as not drawn.
    judge = make_judge("local")
    from genevolve.renderers import make_renderer, render_with_report

    image, render = render_with_report(make_renderer("layout"), _farmers_trajectory(HALF).program)
    s = judge.score(case, image, _farmers_trajectory(HALF).program, render=render)
    missing = {c["what"] for c in s.details["structure"]["checks"] if c["kind"] == "shown" and not c["ok"]}
    assert missing == {"baskets", "tomatoes", "sunflowers"}


def test_grpo_reward_pays_less_for_printing_the_requests_nouns():
    """The hack GRPO found on the old reward: quote the request's nouns for the renderer to print,
    so the image judge has a text to read back (r_img 0 -> 1). Invented text is now no constraint
    for the image judge and a failed check for the sufficiency judge."""
    pytest.importorskip("fontTools")
    from genevolve.renderers.pictograms import emoji_font_path
    from genevolve.training.rewards import HybridReward

    if emoji_font_path() is None:
        pytest.skip("no colour emoji font (scripts/setup-tests.sh installs fonts-noto-color-emoji)")
    case = {"id": "g", "question": "a photo of a pink dog beside a yellow dining table", "category": "color_attr"}
    reward = HybridReward(renderer="layout", judge="local", sufficiency="sufficiency", w=0.5)
    plain = _trajectory(case["question"], "A photo of a pink dog beside a yellow dining table, soft daylight.",
                        skills=["attribute_binding"])
    printed = _trajectory(case["question"], 'A photo of a pink dog beside a yellow dining table. Render the text '
                          '"pink dog", "yellow dining table" exactly as written.', skills=["attribute_binding"])
    a, b = reward(case, plain), reward(case, printed)
    assert b.components["r_img"] <= a.components["r_img"], (a.info["findings"], b.info["findings"])
    assert b.components["r_text"] < a.components["r_text"] and b.total < a.total


def test_verification_summary_says_what_was_checked():
    from genevolve.judges.structure import verification_summary
    from genevolve.judges.verify import verify_image
    from genevolve.renderers import make_renderer, render_with_report
    from genevolve.renderers.pictograms import emoji_font_path

    if emoji_font_path() is None:
        pytest.skip("no colour emoji font (scripts/setup-tests.sh installs fonts-noto-color-emoji)")
    program = _farmers_trajectory(FULL).program
    image, render = render_with_report(make_renderer("layout"), program, size=(768, 1024))
    line = verification_summary(verify_image(image, program), render, program.constraints)
    assert line.startswith("2/2 texts found by OCR; 3/3 subjects shown as pictogram or reference photo")
    assert "counts 1/1" in line and line.endswith("identity and look not checked")
    # A renderer that reports no layout: subjects are said to be unchecked, never passed.
    line = verification_summary({"constraints": [{"text": "GREEN ROOTS", "found": True}]}, {"backend": "gemini"},
                                program.constraints)
    assert line == "1/1 text found by OCR; 3 subjects not checked (the renderer reports no layout)"
