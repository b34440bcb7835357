"""Program validation, repair and derived constraints."""

from __future__ import annotations

import pytest

from genevolve.program import (
    Program,
    ProgramError,
    count_constraints,
    derive_constraints,
    quoted_strings,
    relation_constraints,
    repair_program,
    validate_program,
)


def program(prompt, *ids):
    return Program.from_answer({"gen_prompt": prompt, "reference_images": [{"img_id": i, "note": ""} for i in ids]})


def codes(p, known=None, max_refs=2):
    return {i.code for i in validate_program(p, known, max_refs)}


def test_valid_program_has_no_issues():
    p = program("A tower like the first reference image, sky like the second reference image.", "IMG_001", "IMG_004")
    assert codes(p, {"IMG_001", "IMG_004"}) == set()


@pytest.mark.parametrize("prompt,ids,known,expected", [
    ("x", ("IMG_009",), {"IMG_001"}, {"unknown_id"}),
    ("x", ("IMG_002", "IMG_001"), {"IMG_001", "IMG_002"}, {"unsorted"}),
    ("x", ("IMG_001", "IMG_001"), {"IMG_001"}, {"duplicate_id"}),
    ("x", ("IMG_001", "IMG_002", "IMG_003"), {"IMG_001", "IMG_002", "IMG_003"}, {"too_many"}),
    ("A tower as in IMG_001", ("IMG_001",), {"IMG_001"}, {"id_leak"}),
    ("See https://example.com/a.png", (), set(), {"url_leak"}),
    ("See www.example.com", (), set(), {"url_leak"}),
    ("Like the second reference image", ("IMG_001",), {"IMG_001"}, {"ordinal_out_of_range"}),
    ("Like the first image", (), set(), {"ordinal_out_of_range"}),
])
def test_validation_finds_each_problem(prompt, ids, known, expected):
    assert codes(program(prompt, *ids), known) == expected


def test_ids_sort_numerically():
    assert codes(program("x", "IMG_099", "IMG_100"), {"IMG_099", "IMG_100"}) == set()


def test_repair_makes_any_program_valid():
    p = program("Tower like IMG_007 and IMG_003, see http://x.org/y, colour from the third reference image.",
                "IMG_007", "IMG_003", "IMG_042", "IMG_005", "IMG_003")
    known = {"IMG_003", "IMG_005", "IMG_007"}
    fixed, notes = repair_program(p, known, max_references=2)
    assert validate_program(fixed, known, 2) == []
    assert [r.img_id for r in fixed.reference_images] == ["IMG_003", "IMG_005"]
    assert "IMG_" not in fixed.gen_prompt and "http" not in fixed.gen_prompt
    assert "the first reference image" in fixed.gen_prompt  # IMG_003 became the first
    assert any("IMG_042" in n for n in notes)


@pytest.mark.parametrize("answer,match", [
    ([], "JSON object"),
    ({"reference_images": []}, "gen_prompt"),
    ({"gen_prompt": "   "}, "gen_prompt"),
    ({"gen_prompt": "x", "reference_images": "IMG_001"}, "list"),
    ({"gen_prompt": "x", "reference_images": [{"note": "no id"}]}, "img_id"),
])
def test_from_answer_errors(answer, match):
    with pytest.raises(ProgramError, match=match):
        Program.from_answer(answer)


def test_from_answer_accepts_bare_ids_and_round_trips():
    p = Program.from_answer({"gen_prompt": " x ", "reference_images": ["IMG_001"]})
    assert p.to_official() == {"gen_prompt": "x", "reference_images": [{"img_id": "IMG_001", "note": ""}]}


@pytest.mark.parametrize("text,expected", [
    ('A sign that says "OPEN 24/7" and a "Café" mug', ["OPEN 24/7", "Café"]),
    ("A poster reading “GRAND OPENING” in gold", ["GRAND OPENING"]),
    ("A label «Bio» and 「東京」", ["Bio", "東京"]),
    ("a 'HELLO' banner, don't worry", ["HELLO"]),
    ('"SALE" and "SALE" again', ["SALE"]),
    ("no quotes at all", []),
    # Quotes around nothing but quotes or punctuation are not text anyone asked for.
    ('"\'"\'"', []),
    ('"\'\'" and “"”', []),
    ('" \' " then "OK"', ["OK"]),
    ('"🎉"', ["🎉"]),
])
def test_quoted_strings(text, expected):
    assert quoted_strings(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("three teapots on a table", [("teapots", 3)]),
    ("Three identical white teapots in a triangle", [("teapots", 3)]),
    ("two cats and 4 dogs", [("cats", 2), ("dogs", 4)]),
    ("exactly 12 eggs in a carton", [("eggs", 12)]),
    ("a pair of red shoes", [("shoes", 2)]),
    ("five people on a bench", [("people", 5)]),
    ("one red apple on a plate", [("apple", 1)]),
    ("a 5 years old child, 3 minutes later", []),
    ('a sign "TWO CATS" above one door', [("door", 1)]),
    ("three famous paintings", [("paintings", 3)]),
])
def test_count_constraints(text, expected):
    assert [(c.subject, c.count) for c in count_constraints(text)] == expected


@pytest.mark.parametrize("text,expected", [
    ("a red cube to the left of a blue sphere", ("red cube", "left_of", "blue sphere")),
    ("a lamp on the right of the sofa", ("lamp", "right_of", "sofa")),
    ("a bird above the house", ("bird", "above", "house")),
    ("a cat sitting below the table", ("cat", "below", "table")),
    ("two backpackers in front of the Eiffel Tower", ("backpackers", "in_front_of", "eiffel tower")),
    ("a tree behind the cabin", ("tree", "behind", "cabin")),
])
def test_relation_constraints(text, expected):
    rels = relation_constraints(text)
    assert [(r.subject, r.relation, r.object) for r in rels] == [expected]


def test_derive_constraints_from_request_and_program():
    request = 'Three mugs in a row, a mug labelled “Morning” to the left of a kettle'
    p = program('Mugs; the kettle shows the word "Steam" and "Morning" on a mug; like the first reference image.')
    cs = derive_constraints(request, p)
    texts = [(c.text, c.source) for c in cs if c.kind == "text"]
    # "Steam" is the program's own word: nobody asked to print it, so no judge verifies it.
    assert texts == [("Morning", "request")]
    # A design that carries words may print the request's own words: that text is verified.
    poster = derive_constraints("A poster of a fox in a forest", program('A poster headed "Fox in a forest".'))
    assert [(c.text, c.source) for c in poster if c.kind == "text"] == [("Fox in a forest", "program")]
    assert ("mugs", 3) in [(c.subject, c.count) for c in cs if c.kind == "count"]
    assert any(c.kind == "relation" and c.relation == "left_of" for c in cs)
    assert all(c.describe() for c in cs)


def test_relation_phrases_drop_prepositions_and_counts():
    rel = [c for c in derive_constraints("A moka pot on a marble counter next to three espresso cups")
           if c.kind == "relation"]
    assert [(c.subject, c.relation, c.object) for c in rel] == [("marble counter", "next_to", "espresso cups")]


def test_a_program_never_carries_lone_surrogates():
    p = Program(gen_prompt='a poster \udcff\udcfe "SALE"')
    assert p.gen_prompt == 'a poster \ufffd\ufffd "SALE"'
    p.gen_prompt.encode("utf-8")  # what every renderer and tokenizer needs


def _subjects(request):
    return [(c.subject, c.count, c.arrangement, c.object) for c in derive_constraints(request) if c.kind == "subject"]


@pytest.mark.parametrize("request_text,expected", [
    ('A poster for a farmers market on Saturday June 7 titled "GREEN ROOTS" with baskets of tomatoes and three '
     'sunflowers', [("baskets", None, None, None), ("tomatoes", None, None, "baskets"), ("sunflowers", 3, None, None)]),
    ("three identical teapots in a triangle", [("teapots", 3, "triangle", None)]),
    ("Two cats and five apples in a row", [("cats", 2, None, None), ("apples", 5, "row", None)]),
    # A named thing keeps its words: the "House" of the Opera House is not a house.
    ("The Sydney Opera House at dusk seen from the harbour", [("sydney opera house", 1, None, None)]),
    ("A portrait of a woman with a dog in front of a lighthouse",
     [("woman", 1, None, None), ("dog", 1, None, None), ("lighthouse", 1, None, None)]),
    # A quoted title is text to draw, never a subject.
    ('A poster titled "TWO CATS"', []),
])
def test_subjects_are_derived_from_the_request(request_text, expected):
    assert _subjects(request_text) == expected


@pytest.mark.parametrize("request_text,texts", [
    ('A poster for a farmers market on Saturday June 7 titled "GREEN ROOTS"', ["GREEN ROOTS", "Saturday June 7"]),
    ("A jazz night flyer for Friday July 14 at 9 pm, gold on black", ["Friday July 14 at 9 pm"]),
    # A photo "in June" prints no date; a bare weekday in a sentence is not a date either.
    ("A photo of a meadow in June 2021 at golden hour", []),
    ("A flyer for a yoga class every Friday", []),
])
def test_dates_on_printed_pieces_are_wanted_text(request_text, texts):
    assert [c.text for c in derive_constraints(request_text) if c.kind == "text"] == texts


def test_a_program_that_describes_nothing_is_invalid_and_repaired_with_the_request():
    from genevolve.program import NO_DESCRIPTION_REPAIR, repair_program, validate_program

    for text in ("...", "", " ' ' "):
        assert [i.code for i in validate_program(Program(gen_prompt=text))] == ["no_description"]
    assert not validate_program(Program(gen_prompt="🐱"))
    fixed, notes = repair_program(Program(gen_prompt="..."), set(), request="a cat, see https://x.org/c.png")
    assert notes == [NO_DESCRIPTION_REPAIR] and "https" not in fixed.gen_prompt and "a cat" in fixed.gen_prompt
    assert not validate_program(fixed)


def test_repeated_sentences_and_keeping_each_once():
    from genevolve.program import repeated_sentences, without_repeats

    loop = "A bench.\nHigh detail, no stray text. High detail, no stray text.\tHigh detail, no stray text. Soft. Soft."
    assert repeated_sentences(loop) == ["High detail, no stray text."]  # "Soft." is under three words
    assert without_repeats(loop) == "A bench.\nHigh detail, no stray text. Soft. Soft."
    assert repeated_sentences("A bench. A red bench.") == []
