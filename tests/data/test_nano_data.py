"""Data for the nano policy: three splits disjoint by request and named entity, kept clear of the
bench, budgeted records that obey the final-round message, the compact conversation.

Real parts throughout: the planner teacher, offline tools, the sufficiency judge, layout renders, OCR.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from genevolve.config import Settings
from genevolve.data.pipeline import BuildConfig, DatasetBuilder
from genevolve.data.recipes import (SPLITS, bench_questions, entity_splits, generate_recipes, load_pools,
                                    names_entity)
from genevolve.profiles import get_profile
from genevolve.protocol import FINAL_ROUND_MESSAGE


def test_entities_belong_to_one_split_and_bench_entities_are_never_drawn():
    pools = load_pools()
    questions = bench_questions()
    splits = entity_splits(pools, 0, questions)
    assert set(splits.values()) <= set(SPLITS) | {"bench"}
    for split in SPLITS:
        assert any(v == split for v in splits.values()), split
    bench = [e for e, s in splits.items() if s == "bench"]
    assert "the Eiffel Tower" in bench  # the mini bench's "…in front of the Eiffel Tower…"
    recipes = generate_recipes(200, 0)
    by_entity: dict[str, set[str]] = {}
    for r in recipes:
        if r.entity:
            by_entity.setdefault(r.entity, set()).add(r.split)
            assert splits[r.entity] == r.split
        # No request names an entity that a bench question names.
        for entity in bench:
            assert not names_entity(r.request, pools.entity_names[entity]), (r.request, entity)
    assert all(len(s) == 1 for s in by_entity.values())
    assert {r.split for r in recipes} == set(SPLITS)
    # Requests are unique, so the splits are disjoint by request too.
    assert len({r.request for r in recipes}) == len(recipes)


def test_splits_do_not_move_when_more_recipes_are_drawn():
    small = {r.id: r.split for r in generate_recipes(40, 3)}
    large = {r.id: r.split for r in generate_recipes(80, 3)}
    assert all(large[i] == s for i, s in small.items())


def test_rl_pictures_adds_picture_requests_to_the_rl_pool_and_leaves_the_others_as_they_were():
    """GRPO on a pool that rarely asks for a picture unlearned binding one (p of a bound reference
    0.42 -> 0.0008 in 40 steps): ``rl_pictures`` adds RL recipes that give a picture or name a
    library subject, after the others, which stay exactly as drawn without them."""
    from genevolve.data.recipes import LIBRARY_SUBJECTS

    plain = generate_recipes(60, 0)
    topped = generate_recipes(60, 0, rl_pictures=12)
    assert [r.to_dict() for r in topped[:60]] == [r.to_dict() for r in plain]
    extra = topped[60:]
    assert [r.id for r in extra] == [f"rec_{i:05d}" for i in range(60, 72)]
    assert all(r.split == "rl" and not r.entity for r in extra)
    nouns = set(LIBRARY_SUBJECTS.values())
    given = [r for r in extra if r.images]
    named = [r for r in extra if not r.images]
    assert given and named  # both kinds: the user's picture, and a library subject to search for
    assert all("the first image" in r.request for r in given)
    assert all(any(n in r.request.lower() for n in nouns) for r in named)
    assert len({r.request for r in topped}) == len(topped)  # still unique
    assert [r.split for r in generate_recipes(60, 0, held_out=False, rl_pictures=3)[60:]] == ["sft"] * 3



def test_sft_pictures_add_library_subjects_to_the_sft_records_after_the_rl_ones():
    """The templates show the teacher binding a library picture in about one record in sixty, and
    the SFT adapter then gives the bind token 0.42 where the teacher binds: ``sft_pictures`` adds SFT
    recipes that name a library subject (no picture given), after the RL ones, which stay as drawn."""
    from genevolve.data.recipes import LIBRARY_SUBJECTS

    with_rl = generate_recipes(60, 0, rl_pictures=5)
    topped = generate_recipes(60, 0, rl_pictures=5, sft_pictures=10)
    assert [r.to_dict() for r in topped[:65]] == [r.to_dict() for r in with_rl]
    extra = topped[65:]
    assert [r.id for r in extra] == [f"rec_{i:05d}" for i in range(65, 75)]
    assert all(r.split == "sft" and not r.images and not r.entity for r in extra)
    nouns = set(LIBRARY_SUBJECTS.values())
    assert all(any(n in r.request.lower() for n in nouns) for r in extra)
    assert {r.category for r in extra} == {"spatial_relation", "creative_transformation"}
    assert len({r.request for r in topped}) == len(topped)
    # Without the held-out splits they are SFT records all the same.
    assert [r.split for r in generate_recipes(60, 0, held_out=False, sft_pictures=3)[60:]] == ["sft"] * 3

def test_sft_near_misses_ask_a_library_subject_in_a_colour_its_picture_contradicts(tmp_path):
    """A student that saw the teacher bind every library picture that came back binds a red
    motorcycle for "a black motorcycle". ``sft_near_misses`` adds SFT recipes, after the others,
    that ask a library subject in a colour its caption contradicts; the real planner, run on one,
    is shown the picture and binds none."""
    from genevolve.agent import build_agent
    from genevolve.data.recipes import near_miss_request
    from genevolve.policies import make_policy
    from genevolve.relevance import colour_conflicts
    from genevolve.tools import build_tools
    from genevolve.tools.image_search import parse_image_lines

    before = generate_recipes(60, 0, rl_pictures=5, sft_pictures=4)
    topped = generate_recipes(60, 0, rl_pictures=5, sft_pictures=4, sft_near_misses=8)
    assert [r.to_dict() for r in topped[:69]] == [r.to_dict() for r in before]
    extra = topped[69:]
    assert len(extra) == 8 and all(r.split == "sft" and not r.images for r in extra)
    pools = load_pools()
    for r in extra:
        assert any(colour_conflicts(r.request, *pools.captions[path]) for path, _ in pools.subjects), r.request
    pools.subjects = [s for s in pools.subjects if "motorcycle" not in s[1] and "cat" not in s[1]]
    with pytest.raises(ValueError, match="no library caption"):
        near_miss_request(random.Random(0), pools)

    settings = Settings(offline=True, extra={"library_embeddings": False}, runs_dir=str(tmp_path / "runs"),
                        cache_path=str(tmp_path / "cache.db"))
    agent = build_agent(settings, policy=make_policy("planner?verdicts=1"), tools=build_tools(settings, offline=True),
                        offline=True)
    request = next(r.request for r in extra if "motorcycle" in r.request)
    traj = agent.run(request, [])
    shown = [line for step in traj.tool_calls() if step.tool_name == "image_search"
             for line in parse_image_lines(step.tool_text or "")]
    assert any("motorcycle" in line.title.lower() for line in shown), request
    assert traj.program is not None and not traj.program.reference_images, traj.program
    assert any("None of these pictures shows" in step.think for step in traj.steps), request


def test_drawn_requests_give_a_singular_object_its_article():
    """ "to the right of stack of books" read as a template's slip: the head noun before "of"
    decides the article, so a stack of books keeps its "a" and old coins stay bare."""
    import re

    from genevolve.data.recipes import _article

    assert (_article("stack of books"), _article("old coins"), _article("espresso cup")) == \
        ("a stack of books", "old coins", "an espresso cup")
    requests = [r.request for r in generate_recipes(800, 0, variety=0.5, rl_pictures=40, sft_pictures=40)]
    bare = [q for q in requests if re.search(r"\b(?:of|behind|beside|above|below|on top of|in front of) stack of", q)]
    assert not bare, bare[:3]
    assert any("a stack of books" in q for q in requests)


@pytest.fixture(scope="module")
def nano_build(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("nano_data")
    settings = Settings(offline=True, extra={"library_embeddings": False}, runs_dir=str(tmp / "runs"),
                        cache_path=str(tmp / "cache.db"))
    cfg = BuildConfig(recipes=40, seed=0, parallel=2, size=(320, 320), offline=True, protocol="nano",
                      budget_fraction=0.5, budget_rounds=2, held_out=True)
    DatasetBuilder(tmp / "build", cfg, settings=settings, progress=False).run()
    return tmp / "build"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_build_writes_three_disjoint_splits_with_the_teacher_on_held_out_rows(nano_build):
    recipes = {r["id"]: r for r in _jsonl(nano_build / "recipes.jsonl")}
    train = _jsonl(nano_build / "train.jsonl") + _jsonl(nano_build / "val.jsonl")
    rl, ev = _jsonl(nano_build / "rl_prompts.jsonl"), _jsonl(nano_build / "eval.jsonl")
    assert train and rl and ev
    assert all(recipes[r["id"]]["split"] == "sft" for r in train)
    assert all(r["split"] == "rl" for r in rl) and all(r["split"] == "eval" for r in ev)
    ents = {name: {r.get("entity") for r in rows if r.get("entity")}
            for name, rows in (("sft", [recipes[r["id"]] for r in train]), ("rl", rl), ("eval", ev))}
    assert not (ents["sft"] & ents["rl"]) and not (ents["sft"] & ents["eval"]) and not (ents["rl"] & ents["eval"])
    for row in ev:  # bench rows the runner and the ablation read
        assert row["question"] and row["category"] and row["eval_type"] in ("text", "text_image")
        assert row["teacher"]["termination"] in ("answer", "forced_answer")
    manifest = json.loads((nano_build / "manifest.json").read_text())
    assert manifest["counts"]["eval"] == len(ev) and manifest["counts"]["rl_prompts"] == len(rl)
    assert sum(v["recipes"] for v in manifest["per_split"].values()) == 40
    assert manifest["settings"]["protocol"] == "nano"


def test_records_speak_the_nano_conversation_and_some_obey_the_final_round(nano_build):
    train = _jsonl(nano_build / "train.jsonl")
    prompt = get_profile("nano").system_prompt()
    assert all(r["messages"][0]["content"] == prompt for r in train)
    budgeted = [r for r in train if any(m["content"] == FINAL_ROUND_MESSAGE for m in r["messages"])]
    assert budgeted, "no budgeted record was kept"
    for r in budgeted:
        # After the final-round message the teacher's next turn is the answer.
        i = next(i for i, m in enumerate(r["messages"]) if m["content"] == FINAL_ROUND_MESSAGE)
        assert r["messages"][i + 1]["role"] == "assistant" and "<answer>" in r["messages"][i + 1]["content"]
        assert i + 2 == len(r["messages"])
    stages = _jsonl(nano_build / "stages" / "trajectories.jsonl")
    assert any(s["trajectory"]["termination"] == "forced_answer" for s in stages)


def test_each_image_search_reply_is_followed_by_the_teachers_verdict(tmp_path):
    """With ``planner?verdicts=1`` as the teacher, the turn after every image_search reply (a final-round message between them or not) opens with one verdict sentence, and a verdict that binds names an id the
    reply listed."""
    import re

    settings = Settings(offline=True, extra={"library_embeddings": False}, runs_dir=str(tmp_path / "runs"),
                        cache_path=str(tmp_path / "cache.db"))
    cfg = BuildConfig(recipes=30, seed=0, parallel=2, size=(320, 320), offline=True, protocol="nano",
                      budget_fraction=0.5, budget_rounds=2, held_out=False, rl_pictures=6,
                      teacher="planner?verdicts=1")
    DatasetBuilder(tmp_path / "build", cfg, settings=settings, progress=False).run()
    verdicts = 0
    for r in _jsonl(tmp_path / "build" / "train.jsonl"):
        msgs = r["messages"]
        for i, m in enumerate(msgs[:-1]):
            if m["role"] == "user" and m["content"].removeprefix("<image>").startswith("<tool_response>\nImages for"):
                # The next assistant turn, after a final-round message if the runtime sent one.
                turn = next(x for x in msgs[i + 1:] if x["role"] == "assistant")
                think = turn["content"].split("</think>")[0].removeprefix("<think>")
                first = think.split(". ")[0].rstrip(".") + "."
                assert first.endswith(("so I bind it.", "so I bind none.", "so I go on without one.")), think
                if first.endswith("so I bind it."):
                    assert re.match(r"IMG_\d{3}\b", first) and first[:7] in m["content"], (first, m["content"])
                verdicts += 1
    assert verdicts, "no image_search in the records"
