"""``genevolve eval programs``: program-quality measures, the resumable run, summaries and the paired comparison."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genevolve.bench.programs import (colour_stated, count_stated, leaks, measure, metadata_kept,
                                      position_stated)
from genevolve.cli import app
from genevolve.program import Program
from genevolve.trajectory import ImageRef, Step, Trajectory

runner = CliRunner()



def _measured(request: str, prompt: str, warnings=(), category: str = "Basic") -> dict:
    """The eval's row for a trajectory that answered ``prompt`` at once, with no tool call."""
    traj = Trajectory(request=request, termination="answer", steps=[], warnings=list(warnings),
                      program=Program.from_answer({"gen_prompt": prompt, "reference_images": []}))
    return measure({"id": "x", "question": request, "category": category}, traj, 1.0)

def test_metadata_checks_read_counts_colours_and_positions():
    prompt = ("A photo of four bananas and a purple wine glass, three buses and two wine glasses. The dog is to the "
              "right of the teddy bear.")
    assert count_stated(prompt, "banana", 4) and not count_stated(prompt, "banana", 3)
    assert count_stated(prompt, "bus", 3) and count_stated(prompt, "wine glass", 2)
    assert colour_stated(prompt, "wine glass", "purple") and not colour_stated(prompt, "wine glass", "red")
    assert position_stated(prompt, "dog", "right of", "teddy bear")
    assert not position_stated(prompt, "teddy bear", "right of", "dog")
    expect = {"counts": [{"object": "banana", "count": 4}, {"object": "dog", "count": 1}],
              "colours": [{"object": "wine glass", "colour": "purple"}],
              "positions": [{"object": "dog", "relation": "left of", "anchor": "teddy bear"}]}
    assert metadata_kept(prompt, expect) == {"counts_kept": 1.0, "colours_kept": 1.0, "positions_kept": 0.0}
    assert metadata_kept(prompt, None) == {"counts_kept": None, "colours_kept": None, "positions_kept": None}


def test_leaks_are_reasoning_or_protocol_text_the_request_did_not_have():
    assert leaks("A red fox. I will now call image_search for IMG_001.", "a red fox")
    assert leaks('<think>plan</think> {"gen_prompt": "x"}', "x")
    assert leaks("The user wants a fox in snow.", "a fox in snow")
    # A student that copies its teacher's think text into the program.
    assert leaks("a photo of a yellow dining table will anchor its appearance better than words.",
                 "a photo of a yellow dining table")
    assert leaks("A poster that says Let me in, on a door.", "A poster that says 'Let me in' on a door") == []
    assert leaks("A red fox in snow, soft light.", "a red fox in snow") == []


def test_text_to_print_that_the_request_never_had_is_invented_and_not_clean():
    """GRPO+SDL learned to quote the request's nouns for the renderer to print; the measure sees it."""
    from genevolve.program import invented_texts

    request = "a photo of a yellow dining table and a pink dog"
    prompt = ('A photo of a yellow dining table and a pink dog. Render the text "yellow dining table", "pink dog" '
              "exactly as written.")
    traj = Trajectory(request=request, termination="answer", steps=[],
                      program=Program.from_answer({"gen_prompt": prompt, "reference_images": []}))
    row = measure({"id": "g", "question": request, "category": "color_attr"}, traj, 1.0)
    assert row["valid"] and not row["leak"] and row["invented"] and not row["clean"]
    assert row["invented_texts"] == ["yellow dining table", "pink dog"]
    # The request decides what is text: quoted, after a writing cue, or on a design that carries words.
    assert invented_texts('A sign reading "WELCOME HOME".', "a sign that says Welcome Home") == []
    assert invented_texts('A shopfront with "Rosa\'s" above the door.', "a bakery called Rosa's") == []
    assert invented_texts('A poster, "GREEN ROOTS", "Saturday June 7".',
                          'A poster for a market on Saturday June 7 titled "GREEN ROOTS"') == []
    assert invented_texts('A stop sign with "stop sign" on it.', "a photo of a stop sign") == ["stop sign"]
    assert invented_texts('A fox. Caption: "Wild at heart".', "a poster of a fox") == ["Wild at heart"]


def test_a_picture_the_program_does_not_bind_is_an_invented_claim():
    """GRPO+SDL's adapter wrote the teacher's line for the user's picture on requests that gave
    none ("Match the subject, look and identity of the image.", 10 of 36 public requests), which
    read as clean: the renderer is told to follow a picture it never gets."""
    from genevolve.program import unbound_picture_citations

    row = _measured("a photo of a bench", "A photo of a bench. Match the subject, look and identity of the image. "
                    "High detail, coherent single image, no watermark, no stray text.", category="single_object")
    assert row["valid"] and row["invented_claim"] and not row["clean"]
    assert row["invented_claims"] == ["picture: of the image"]
    # The picture being drawn is no citation; the request's own words and a bound picture are not invented.
    assert unbound_picture_citations("Make this image special; the picture is real.", "a bench", 0) == []
    assert unbound_picture_citations("As in the reference photo, a fox.", "a fox", 0) == ["the reference photo"]
    assert unbound_picture_citations("The rocket from the first image, on the Moon.",
                                     "The rocket from the first image on the Moon", 0) == []
    assert unbound_picture_citations("Match the look of the image.", "a fox", 1) == []


def test_facts_nobody_searched_and_placements_of_unnamed_things_are_invented():
    """The nano adapters learned the teacher's "Facts to respect:" label and write it with nothing
    searched ("The cat is a mammal, not reptile."), and place things the request never names."""
    from genevolve.program import unnamed_placements
    from genevolve.relevance import unsupported_facts

    request = "a photo of a cat"
    prompt = "A photo of a cat. Facts to respect: The cat is a mammal, not reptile. Layout: place the cat below the table."
    row = _measured(request, prompt, category="single_object")
    assert row["valid"] and row["invented_claim"] and not row["clean"]
    assert row["invented_claims"] == ["fact: Facts to respect: The cat is a mammal, not reptile.",
                                      "position: cat below table"]
    # A fact carried from a search result is the search's, and a placement of named things is the request's.
    sources = [("Eiffel Tower — Overview", "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars "
                                           "in Paris, France.")]
    carried = ("A poster of the Eiffel Tower. Facts to respect: The Eiffel Tower is a wrought-iron lattice tower on "
               "the Champ de Mars in Paris, France.")
    assert unsupported_facts(carried, "a poster of the Eiffel Tower", sources) == []
    assert unsupported_facts(carried, "a poster of the Eiffel Tower", []) != []
    assert unnamed_placements("Place the vase right of the horse.", "a vase right of a horse") == []
    # A sentence carried from search is the source's wording, not a placement the program makes.
    wall = [("Great Wall of China — Overview", "The Great Wall of China is a series of fortifications built across "
                                                "northern China over many centuries.")]
    steps = [Step(round=1, kind="tool_call", tool_name="search", tool_arguments={"queries": ["Great Wall"]},
                  tool_text='### "Great Wall"\n1. **Great Wall of China — Overview** — ' + wall[0][1] + " (source: x)")]
    prompt = "The Great Wall. Facts to respect: " + wall[0][1]
    traj = Trajectory(request="The Great Wall.", termination="answer", steps=steps,
                      program=Program.from_answer({"gen_prompt": prompt, "reference_images": []}))
    row = measure({"id": "w", "question": "The Great Wall.", "category": "Basic"}, traj, 1.0)
    assert row["facts"] == 1 and not row["invented_claim"], row["invented_claims"]


def test_a_program_that_drops_a_subject_or_says_nothing_is_not_clean():
    """The untuned base answered "..." (after its forced final round) on 8 of 8 requests, and the
    shipped adapter wrote "a photo of toothbrush." for "a photo of a toothbrush below a pizza"."""
    from genevolve.bench.programs import subjects_kept

    assert subjects_kept("a photo of toothbrush.", "a photo of a toothbrush below a pizza") == 0.5
    assert subjects_kept("...", "a photo of a bottle") == 0.0
    assert subjects_kept("Two bottles on a shelf.", "a photo of a bottle") == 1.0
    request = "a photo of a bottle"
    traj = Trajectory(request=request, termination="forced_answer", steps=[],
                      program=Program.from_answer({"gen_prompt": "...", "reference_images": []}))
    row = measure({"id": "b", "question": request, "category": "Basic"}, traj, 1.0)
    assert not row["valid"] and not row["leak"] and row["subjects_kept"] == 0.0 and not row["clean"]
    # The runtime puts the request in its place; the policy still wrote nothing valid.
    from genevolve.program import NO_DESCRIPTION_REPAIR

    assert not _measured(request, request, [f"program repaired: {NO_DESCRIPTION_REPAIR}"])["valid"]


def test_a_sentence_said_twice_is_a_repeat_and_not_clean():
    request = "a photo of a bench"
    looped = "A photo of a bench. High detail, coherent single image. High detail, coherent  single image!"
    row = _measured(request, looped)
    assert row["valid"] and row["repeated"] and not row["clean"]
    assert row["repeated_sentences"] == ["High detail, coherent single image."]
    row = _measured(request, "A photo of a bench. Soft light.")
    assert row["clean"] and not row["tidied"]
    # The same program after the answer step took the loop out: clean, and says it was mended.
    row = _measured(request, "A photo of a bench. Soft light.",
                    ['program cleaned: kept once what it said more than once: "High detail"'])
    assert row["clean"] and row["tidied"] and row["tidied_by"][0].startswith("program cleaned")


def test_a_position_taken_back_is_not_kept():
    from genevolve.bench.programs import position_stated

    assert position_stated("A vase right of a horse.", "vase", "right of", "horse")
    assert not position_stated("A vase right of a horse; the horse is right of the vase.", "vase", "right of", "horse")


def test_a_reference_whose_colours_contradict_the_request_is_irrelevant():
    from genevolve.relevance import colour_conflicts

    assert colour_conflicts("A black motorcycle is parked", "Red motorcycle in a garage") == ["motorcycle"]
    assert colour_conflicts("a black and white cat", "Chelsea the cat", "a ginger tabby cat's face") == ["cat"]
    assert colour_conflicts("a red motorcycle", "Red motorcycle in a garage") == []
    assert colour_conflicts("a motorcycle at dusk", "Red motorcycle in a garage") == []
    assert colour_conflicts("a white cat", "Chelsea the cat", "a ginger and white cat") == []


def test_a_count_the_request_never_gave_is_invented_and_not_clean():
    """The 2026-12-05 SFT adapter added "Counts: exactly 2 …" to 11 of 36 external requests that
    count nothing ("a small airplane"); the teacher never does (0 of 509 training programs)."""
    from genevolve.program import invented_counts

    request = "A black and white cat sits in a white sink."
    prompt = request + " Counts: exactly 2 cats, each one fully visible and separated from the others."
    traj = Trajectory(request=request, termination="answer", steps=[],
                      program=Program.from_answer({"gen_prompt": prompt, "reference_images": []}))
    row = measure({"id": "c", "question": request, "category": "color"}, traj, 1.0)
    assert row["valid"] and not row["invented"] and row["invented_count"] and not row["clean"]
    assert row["invented_counts"] == ["2 cats"]
    # The request's own counts, a pair, people or animals it shows, and the anatomy skill's fingers are not invented.
    assert invented_counts("Three sinks. Counts: exactly 3 sinks.", "a photo of three sinks") == []
    assert invented_counts("Two shoes side by side.", "a pair of red shoes") == []
    assert invented_counts("Exactly 2 people on a bench.", "a man and a woman on a bench") == []
    assert invented_counts("Hands with 5 fingers each.", "a pianist at work") == []
    assert invented_counts("Exactly 2 people on the bench.", "a photo of a bench") == ["2 people"]
    assert invented_counts("Counts: exactly 3 sinks.", "a photo of two sinks") == ["3 sinks"]


def test_a_colour_the_request_never_gave_is_invented_and_not_clean():
    from genevolve.relevance import invented_colours

    request = "a photo of a bench"
    prompt = "A photo of a bench. Bind each attribute to its own object: the bench is blue."
    traj = Trajectory(request=request, termination="answer", steps=[],
                      program=Program.from_answer({"gen_prompt": prompt, "reference_images": []}))
    row = measure({"id": "c", "question": request, "category": "colors"}, traj, 1.0)
    assert row["valid"] and row["invented_colour"] and row["invented_colours"] == ["blue bench"] and not row["clean"]
    # Before or after the noun, in any shade of the asked colour, for things the request names only.
    assert invented_colours("A crimson car on a road; the car is scarlet.", "a red car") == []
    assert invented_colours("A green apple beside a red cup.", "a green apple and a cup") == ["red cup"]
    assert invented_colours("The cubes are painted red and white.", "two cubes") == ["red and white cube"]
    # The picture's style and light, things the request never names, and the user's quoted text pass.
    assert invented_colours("A black-and-white photo of a cat in golden light, a red scarf.", "a photo of a cat") == []
    assert invented_colours('A poster with the text "Blue Cat".', 'a poster that says "Blue Cat"') == []
    # What a search result says the thing looks like is grounded.
    assert invented_colours("The lighthouse is red and white.", "a lighthouse",
                            ["Lighthouse. The lighthouse is painted red and white."]) == []
    # Adjectives of one noun across a comma give it its colour (T2I-CompBench color_268, which the
    # planner's own binding line failed), and a colour after "is" and a comma gives what follows none.
    request = "A tan bath tub sits empty in a white, clean bathroom."
    assert invented_colours("A tan bath tub in a white, clean bathroom; the bathroom is white.", request) == []
    assert invented_colours("Green trees; the trees are red.", "the car is red, green trees line the road") == [
        "red tree"]


def test_markup_in_a_program_is_garbled_and_not_clean():
    """Programs the nano adapters wrote on PartiPrompts: markup a renderer would try to draw."""
    from genevolve.program import garbled_fragments

    for request, prompt, words in [
            ("a motorcycle", "A motorcycle= science= layout: place the red and black motorcycle in a garage.",
             ["motorcycle=", "science="]),
            ("a book", "A book[object]. High detail, coherent single image.", ["book[object]."]),
            ("swirls of blue", "Radiating swirls of blusciencearticle{mid: date, read: } }", ["blusciencearticle{mid:", "}"])]:
        traj = Trajectory(request=request, termination="answer", steps=[],
                          program=Program.from_answer({"gen_prompt": prompt, "reference_images": []}))
        row = measure({"id": "c", "question": request, "category": "x"}, traj, 1.0)
        assert row["valid"] and row["garbled"] and row["garbled_words"] == words and not row["clean"], row
    # What the request itself has is its own: a hex colour, a quoted sign; plain numbers pass.
    assert garbled_fragments("A poster in #FF5733 orange.", "a poster in #FF5733 orange") == []
    assert garbled_fragments('A sign reading "<OPEN>".', 'a sign reading "<OPEN>"') == []
    assert garbled_fragments("A 1920s kite, 3.5 metres wide.", "a kite") == []
    assert garbled_fragments("people: 0.0000000000000000", "people") == ["0.0000000000000000"]


def test_measure_counts_facts_and_references_by_relevance():
    request = "A poster of the Eiffel Tower with the word 'PARIS', three pigeons in front of it"
    reply = ('### "Eiffel Tower"\n1. **Eiffel Tower — Overview** — The Eiffel Tower is a wrought-iron lattice tower '
             'on the Champ de Mars in Paris, France. (source: x)\n2. **Holi — Overview** — Holi is a Hindu spring '
             'festival known as the festival of colours, celebrated in India. (source: y)')
    steps = [Step(round=1, kind="tool_call", tool_name="search", tool_arguments={"queries": ["Eiffel Tower"]},
                  tool_text=reply, assistant_text="<think>look it up</think> call"),
             Step(round=2, kind="tool_call", tool_name="query_knowledge",
                  tool_arguments={"skill_name": "text_rendering"}, tool_text="guide"),
             Step(round=3, kind="answer", assistant_text="<think>done</think> answer")]
    images = [ImageRef(img_id="IMG_001", path="a.jpg", title="Eiffel Tower at night"),
              ImageRef(img_id="IMG_002", path="b.jpg", title="Espresso cup on a saucer")]
    prompt = (f"{request}. Facts to respect: The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars "
              "in Paris, France. Holi is a Hindu spring festival known as the festival of colours. "
              "Match the first and second reference images.")
    program = Program.from_answer({"gen_prompt": prompt, "reference_images": [{"img_id": "IMG_001"},
                                                                              {"img_id": "IMG_002"}]})
    traj = Trajectory(request=request, termination="answer", program=program, steps=steps, images=images)
    row = measure({"id": "c", "question": request, "category": "Writing & Symbols"}, traj, 1.5)
    assert row["valid"] and row["quotes_kept"] == 1.0 and not row["leak"]
    assert (row["facts"], row["irrelevant_facts"]) == (2, 1)
    assert (row["references"], row["irrelevant_references"]) == (2, 1)
    assert row["skills_needed"] == ["text_rendering"] and row["skill_recall"] == 1.0
    assert row["rounds"] == 3 and row["tokens"] == 6 and row["seconds"] == 1.5


@pytest.mark.parametrize("bound, expected", [([], 0.0), (["IMG_002"], 0.5), (["IMG_001", "IMG_002"], 1.0),
                                             (["IMG_003"], 0.0)])
def test_user_pictures_bound_is_the_share_of_the_users_pictures_the_program_binds(bound, expected):
    """A request that gives pictures is about them ("the rocket from the first image"): the share the
    program binds, a library picture (IMG_003) not counting for them; null when none was given."""
    request = "Reimagine the rocket from the first image as an ice sculpture, beside the clock of the second."
    images = [ImageRef(img_id="IMG_001", path="a.jpg", source="user"), ImageRef(img_id="IMG_002", path="b.jpg",
                                                                            source="user"),
              ImageRef(img_id="IMG_003", path="c.jpg", title="Rocket on a launch pad")]
    program = Program.from_answer({"gen_prompt": request, "reference_images": [{"img_id": i} for i in bound]})
    traj = Trajectory(request=request, termination="answer", program=program, images=images,
                      user_image_ids=["IMG_001", "IMG_002"])
    assert measure({"id": "u", "question": request, "category": "x"}, traj, 1.0)["user_pictures_bound"] == expected
    assert _measured("A rocket as an ice sculpture.", "A rocket as an ice sculpture.")["user_pictures_bound"] is None
    unanswered = Trajectory(request=request, termination="format_error", images=images,
                            user_image_ids=["IMG_001", "IMG_002"])
    assert measure({"id": "u", "question": request, "category": "x"}, unanswered, 1.0)["user_pictures_bound"] == 0.0


def test_eval_programs_runs_resumes_summarises_and_compares(tmp_path):
    out = tmp_path / "run"
    args = ["eval", "programs", "--set", "official-examples", "--out", str(out), "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "rollout.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["valid"] for r in rows)
    ex01 = next(r for r in rows if r["id"] == "official-examples/ex01")
    assert ex01["irrelevant_facts"] == 0 and ex01["quotes_kept"] == 1.0  # the '147' scoreboard
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["requests"] == 3 and summary["overall"]["irrelevant_facts"] == 0
    assert "official-examples" in summary["sets"] and (out / "summary.png").stat().st_size > 1000
    assert "| set / category |" in (out / "summary.md").read_text()
    # A second run into the same folder needs --resume, and then has nothing left to do.
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, args + ["--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert len((out / "rollout.jsonl").read_text().splitlines()) == 3
    # Measures can be recomputed from the stored trajectories without new rollouts.
    again = runner.invoke(app, ["eval", "remeasure", str(out)])
    assert again.exit_code == 0 and "3 requests measured again" in again.output, again.output
    assert [json.loads(line)["id"] for line in (out / "rollout.jsonl").read_text().splitlines()] == [r["id"] for r in rows]
    # Paired comparison of a run with itself: zero difference on every metric.
    cmp = runner.invoke(app, ["eval", "compare", str(out), str(out), "--out", str(tmp_path / "cmp")])
    assert cmp.exit_code == 0, cmp.output
    comparisons = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert {c["metric"] for c in comparisons} >= {"valid", "leak", "irrelevant_facts"}
    assert all(c["delta"] == 0 for c in comparisons)


def test_eval_programs_stratified_limit_and_bad_set(tmp_path):
    out = tmp_path / "geneval"
    result = runner.invoke(app, ["eval", "programs", "--set", "geneval", "--limit", "6", "--out", str(out),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "rollout.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and len({r["category"] for r in rows}) == 6  # one per GenEval tag
    # A larger limit resumes the same nested sample, and the new requests' cases are kept beside the
    # old ones, so the run can be measured again.
    more = runner.invoke(app, ["eval", "programs", "--set", "geneval", "--limit", "8", "--out", str(out),
                               "--no-progress", "--resume"])
    assert more.exit_code == 0, more.output
    rows = [json.loads(line) for line in (out / "rollout.jsonl").read_text().splitlines()]
    cases = [json.loads(line)["id"] for line in (out / "cases.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and sorted(cases) == sorted(r["id"] for r in rows)
    again = runner.invoke(app, ["eval", "remeasure", str(out)])
    assert again.exit_code == 0 and "8 requests measured again" in again.output, again.output
    bad = runner.invoke(app, ["eval", "programs", "--set", "nope", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown eval set" in bad.output


def test_a_program_that_only_copies_the_request_is_marked_copied(tmp_path):
    """Programs a GRPO adapter wrote on GenEval and PartiPrompts after learning to answer at once:
    the request handed on, at most with the teacher's fixed quality line. Framing words and plural
    forms are not words of the program's own; a line of guidance is. A copy is still clean (the
    teacher writes one where it has nothing to add); the ship decision looks at the share."""
    from genevolve.program import QUALITY_LINE, copied_request, own_words

    for request, prompt in [("a photo of three sinks", "a photo of three sinks"),
                            ("a photo of a black backpack", "a photo of a black backpack. " + QUALITY_LINE),
                            ("imaginary numbers", "A picture of number."),
                            ("a photo of a bench", "A bench, in a photo. high detail, coherent single image, "
                                                   "no watermark, no stray text")]:
        row = _measured(request, prompt)
        assert row["valid"] and row["copied"], (request, row)
    copy = _measured("a photo of three sinks", "A photo of three sinks.")
    assert copy["clean"] and not copy["clean_not_copied"]  # clean by construction, and nothing more
    added = "A photo of three sinks side by side, each fully visible, evenly spaced. " + QUALITY_LINE
    row = _measured("a photo of three sinks", added)
    assert not row["copied"] and row["clean"] and row["clean_not_copied"]
    assert not _measured("a photo of a bench", "A bench. The bench is blue.")["clean_not_copied"]
    # A run written before the measure gets it from its clean and copied columns.
    from genevolve.bench.programs import load_rows

    old_run = tmp_path / "old-run"
    old_run.mkdir()
    lines = [{k: v for k, v in r.items() if k != "clean_not_copied"} | {"id": i}
             for i, r in enumerate([copy, row])]
    (old_run / "rollout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    assert [r["clean_not_copied"] for r in load_rows(old_run)] == [False, True]
    assert own_words(added, "a photo of three sinks") == ["side", "by", "side", "each", "fully", "visible",
                                                           "evenly", "spaced"]
    assert not copied_request("", "a cat")  # no program is not a copy (valid says so)
