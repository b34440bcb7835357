"""What a person sees on an offline comp, and what the verifier says about it, agree.

Each case is a request the studio was tried with: the program is made as the agent makes it (the
request restated with the planner's text sentence, constraints derived from the request), drawn by
the layout renderer and read back by real OCR.
"""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw, ImageFont

from genevolve.judges import make_judge
from genevolve.judges.structure import check_structure, corner_holds, verification_summary
from genevolve.judges.verify import extra_words, match_constraint, verify_image
from genevolve.program import Program, Reference, derive_constraints
from genevolve.renderers import make_renderer, render_with_report

NO_OTHER_WORDS = (" Render the text {} exactly as written, letter for letter, in crisp legible lettering; "
                  "no other words anywhere.")


def agent_program(request: str, refs: list[Reference] = ()) -> Program:
    from genevolve.program import wanted_texts

    quoted = ", ".join(f'"{t}"' for t in wanted_texts(request))
    prog = Program(gen_prompt=request + (NO_OTHER_WORDS.format(quoted) if quoted else ""), reference_images=list(refs))
    prog.constraints = derive_constraints(request, prog)
    return prog


@pytest.fixture(scope="module")
def layout():
    return make_renderer("layout")


def _emoji_font():
    from genevolve.renderers.pictograms import emoji_font_path

    if emoji_font_path() is None:
        pytest.skip("no colour emoji font (scripts/setup-tests.sh installs Debian's fonts-noto-color-emoji)")


# ---------------------------------------------------------------- 1. correct text is found

def test_words_a_detector_cuts_in_two_are_read_once(layout):
    """"THE DAY" came back as "THE" + "EDAY" (two overlapping boxes): the row is read again whole."""
    _emoji_font()
    prog = agent_program('A cafe chalkboard that says "SOUP OF THE DAY" with a bowl')
    image, render = render_with_report(layout, prog, size=(1024, 1024))
    report = verify_image(image, prog, render["layout"])
    soup = report["constraints"][0]
    assert soup["found"] and soup["status"] == "found", report["ocr_text"]
    assert report["text_score"] == 1.0 and report["extra_text"] == []
    line = verification_summary(report, render, prog.constraints)
    assert line.startswith("1/1 text found by OCR")


def test_a_near_miss_is_reported_as_near_and_not_counted():
    near = match_constraint("SOUP OF THE DAY", ["SOUP OF THE DAI"])
    assert not near["found"] and near["status"] == "near" and near["similarity"] > 0.9
    assert match_constraint("SOUP OF THE DAY", ["SOUPOFTHEDAY"])["status"] == "found"  # OCR joined the words
    assert match_constraint("SOUP OF THE DAY", ["CLOSED"])["status"] == "missing"


def test_the_studio_card_is_green_only_when_the_text_is_all_there():
    from app.generate_tab import verification_mark

    assert verification_mark({"constraints": [{"found": False, "status": "missing"}]}) == ("✗", "bad")
    assert verification_mark({"constraints": [{"found": False, "status": "near"}]})[1] == "warn"
    assert verification_mark({"constraints": [{"found": True, "status": "found"}],
                              "extra_text": [{"text": "stages"}]})[1] == "warn"
    assert verification_mark({"constraints": [{"found": True, "status": "found"}], "extra_text": []}) == ("✓", "good")


# ---------------------------------------------------------------- 2. no words nobody asked for

def _poster_with_labels(path):
    img = Image.new("RGB", (900, 600), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.truetype("DejaVuSans-Bold.ttf", 54)
    for i in range(3):
        d.text((40 + i * 290, 80), "Stages", fill="black", font=font)
    d.text((40, 380), "EVAPORATION", fill="black", font=font)
    img.save(path)
    return path


def test_words_the_program_did_not_ask_for_are_reported_and_lower_the_score(tmp_path):
    report = verify_image(_poster_with_labels(tmp_path / "labels.png"), ["EVAPORATION"])
    assert report["constraints"][0]["found"]
    assert [w["text"] for w in report["extra_text"]] == ["stages"] * 3
    assert report["text_score"] == pytest.approx(1 / 4)  # found / (asked + stray words)
    assert "3 words on the image not asked for" in verification_summary(report, None, [])
    # Text inside a reference photo the renderer placed (a user's logo) is the user's, not stray.
    lines = [{"text": "ACME", "score": 0.99, "box": [10, 10, 90, 40]}]
    assert extra_words(lines, ["OPEN"], ignore=[[0, 0, 100, 100]]) == []
    assert [w["text"] for w in extra_words(lines, ["OPEN"])] == ["acme"]


@pytest.mark.parametrize("request_text", [
    'An infographic of the water cycle with three labelled stages: "EVAPORATION", "CONDENSATION", "PRECIPITATION"',
    'A concert poster with the title "HARBOR LIGHTS" and a saxophone player',
    'A bakery sign that reads "FRESH BREAD DAILY" above a croissant',
])
def test_the_comp_writes_only_the_words_the_program_asks_for(layout, request_text):
    prog = agent_program(request_text)
    image, render = render_with_report(layout, prog, size=(1024, 1024))
    report = verify_image(image, prog, render["layout"])
    assert report["extra_text"] == [], report["ocr_text"]
    assert all(c["found"] for c in report["constraints"]) and report["text_score"] == 1.0


# ---------------------------------------------------------------- 3. positions from geometry

def test_the_sign_goes_where_the_request_puts_it_and_the_check_reads_the_text_box(layout):
    _emoji_font()
    request = 'A bakery sign that reads "FRESH BREAD DAILY" above a croissant'
    prog = agent_program(request)
    image, render = render_with_report(layout, prog, size=(1024, 1024))
    report = verify_image(image, prog, render["layout"])
    text_box = report["constraints"][0]["box"]
    croissant = next(d for d in render["layout"]["subjects"] if d["name"] == "croissant")
    assert text_box[3] <= croissant["boxes"][0][1]  # the lettering really sits above the croissant
    # No placeholder stands in for the sign: the lettering is the sign.
    assert [d["name"] for d in render["layout"]["subjects"]] == ["croissant"]
    check = check_structure(prog.constraints, render["layout"], report)
    rel = next(c for c in check["checks"] if c["kind"] == "relation")
    assert rel["ok"] is True and "OCR" in rel["detail"]
    # The same relation against a layout whose croissant sits above the text fails.
    moved = dict(render["layout"], subjects=[dict(croissant, boxes=[[400, 0, 600, 150]])])
    rel = next(c for c in check_structure(prog.constraints, moved, report)["checks"] if c["kind"] == "relation")
    assert rel["ok"] is False
    # Without OCR boxes (text not found) the relation is not checked, and counts neither way.
    rel = next(c for c in check_structure(prog.constraints, render["layout"], None)["checks"] if c["kind"] == "relation")
    assert rel["ok"] is None and rel["detail"].startswith("not checked")


def test_positions_without_drawn_boxes_are_said_to_be_not_checked():
    prog = agent_program("A cat under the chair")
    line = verification_summary({"constraints": []}, {"backend": "gemini"}, prog.constraints)
    assert "positions not checked" in line and "positions 1/1" not in line


# ---------------------------------------------------------------- 4. the user's image where asked

def _logo(path):
    img = Image.new("RGB", (400, 400), (250, 250, 250))
    d = ImageDraw.Draw(img)
    d.ellipse((40, 40, 360, 360), fill=(200, 30, 30))
    d.text((110, 165), "ACME", fill="white", font=ImageFont.truetype("DejaVuSans-Bold.ttf", 60))
    img.save(path)
    return str(path)


def test_a_logo_asked_for_the_top_right_corner_stays_there(layout, tmp_path):
    request = 'A poster titled "GRAND OPENING" with my logo in the top-right corner'
    ref = Reference(img_id="IMG_001", note="the user's own image: keep its subject, look and identity",
                    path=_logo(tmp_path / "logo.png"))
    prog = agent_program(request, [ref])
    image, render = render_with_report(layout, prog, size=(1024, 1024))
    placed = render["layout"]["references"]
    assert [(p["index"], p["asked"]) for p in placed] == [(0, "top-right")]
    box = placed[0]["box"]
    assert corner_holds(box, [1024, 1024], "top-right")
    report = verify_image(image, prog, render["layout"])
    title = report["constraints"][0]
    assert title["found"] and report["extra_text"] == []  # the logo's own "ACME" is not stray
    tb = title["box"]
    assert tb[1] >= box[3] or tb[3] <= box[1] or tb[2] <= box[0]  # the logo covers no letter of the title
    judge = make_judge("local").score({"question": request}, image, prog, render=render)
    placement = [c for c in judge.details["structure"]["checks"] if c["kind"] == "placement"]
    assert placement and placement[0]["ok"] is True
    # Filling the top half is not a corner mark.
    assert not corner_holds([0, 0, 1024, 512], [1024, 1024], "top-right")


def test_a_relation_naming_the_first_image_means_what_that_image_shows(layout):
    """"My cat from the first image sitting under a wooden chair": the cat photo goes under the
    chair, and the check measures that relation rather than dropping it."""
    import skimage.data
    from pathlib import Path

    request = "My cat from the first image sitting under a wooden chair, with a floor lamp to the right of the chair."
    cat = Reference(img_id="IMG_001", note="the user's own image: keep its subject, look and identity",
                    path=str(Path(skimage.data.__file__).parent / "chelsea.png"))
    prog = agent_program(request, [cat])
    prog.gen_prompt += " Layout: place the first image below the wooden chair."
    assert any(c.kind == "relation" and c.subject == "first image" for c in prog.constraints)
    _, render = render_with_report(layout, prog, size=(1248, 832))
    drawn = {d["name"]: d for d in render["layout"]["subjects"]}
    photo = next(d for d in drawn.values() if d.get("reference") == 0)
    chair = drawn["wooden chair"]
    assert photo["boxes"][0][1] >= chair["boxes"][0][3] - 0.25 * (chair["boxes"][0][3] - chair["boxes"][0][1])
    rel = next(c for c in check_structure(prog.constraints, render["layout"])["checks"]
               if c["kind"] == "relation" and "first image" in c["what"])
    assert rel["ok"] is True
    beside = dict(render["layout"], subjects=[dict(photo, boxes=[[0, chair["boxes"][0][1], 200,
                                                                  chair["boxes"][0][3]]])] +
                  [d for d in render["layout"]["subjects"] if d is not photo])
    rel = next(c for c in check_structure(prog.constraints, beside)["checks"]
               if c["kind"] == "relation" and "first image" in c["what"])
    assert rel["ok"] is False  # a cat beside the chair is not under it


def test_my_cat_is_the_users_photo_not_a_placeholder_beside_it(layout):
    import skimage.data
    from pathlib import Path

    request = 'A retro travel poster of my cat next to a rocket, title "MOON CAT" in bold serif'
    mine = Reference(img_id="IMG_001", note="the user's own image: keep its subject, look and identity",
                     path=str(Path(skimage.data.__file__).parent / "chelsea.png"))
    prog = agent_program(request, [mine])
    _, render = render_with_report(layout, prog, size=(1248, 832))
    drawn = {d["name"]: d for d in render["layout"]["subjects"]}
    assert drawn["my cat"]["form"] == "reference" and drawn["my cat"]["reference"] == 0
    assert render["layout"].get("placeholders") is None  # no panel standing in for the cat beside its photo
