"""The layout renderer: real renders, read back by real OCR; bad input refused clearly."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from genevolve.judges.verify import verify_image
from genevolve.program import Constraint, Program, Reference, derive_constraints
from genevolve.renderers import RenderError, make_renderer, render_with_report
from genevolve.renderers.layout import LayoutRenderer, build_palette, placement_hints, prompt_colors
from genevolve.renderers.typeset import assign_roles, contrast_ratio, fit_block, Style

PHOTOS = Path(skimage.data.__file__).parent
SQUARE, PORTRAIT, WIDE = (1024, 1024), (768, 1024), (1280, 720)


def program(prompt: str, texts: list[str], refs: list[tuple[str, str]] = ()) -> Program:
    return Program(
        gen_prompt=prompt,
        reference_images=[Reference(img_id=f"IMG_{i + 1:03d}", note=note, path=str(PHOTOS / name))
                          for i, (name, note) in enumerate(refs)],
        constraints=[Constraint(kind="text", text=t) for t in texts],
    )


# 20 programs: 1-4 texts, short and long, with and without references, three aspect ratios.
CASES = [
    ("paris", program('Retro travel poster in orange and navy, title "PARIS" in bold serif', ["PARIS"]), PORTRAIT),
    ("jazz", program("Jazz night flyer, gold on black", ["BLUE NOTE", "Live every Friday from nine until late",
                                                          "Tickets at the door"]), SQUARE),
    ("astronaut-bg", program("Space poster; the first reference image fills the background",
                             ["MISSION CONTROL", "To the moon and back"], [("astronaut.png", "background")]), PORTRAIT),
    ("coffee-left", program("Cafe banner with the first reference image on the left",
                            ["Morning Brew", "Fresh roasted beans, open 7am to 3pm daily"], [("coffee.png", "left")]), WIDE),
    ("two-refs", program("Adoption poster with the first and second reference images side by side",
                         ["ADOPT ME", "Chelsea is four years old and loves sunny windows", "Call 555 0199",
                          "Free vaccinations"], [("chelsea.png", "left"), ("horse.png", "right")]), SQUARE),
    ("long-only", program("A teal widescreen banner",
                          ["The quick brown fox jumps over the lazy dog near the riverbank at dawn"]), WIDE),
    ("rocket-top", program("Launch day poster, the first reference image at the top",
                           ["LIFTOFF", "Cape Canaveral, 6:02 AM"], [("rocket.jpg", "top")]), PORTRAIT),
    ("minimal", program("Minimal white poster, black sans serif", ["Less is more"]), SQUARE),
    ("neon", program("Cyberpunk neon nightclub flyer", ["NEON NIGHTS", "DJ Kite", "Saturday 11 PM",
                                                        "Dress code: chrome"]), PORTRAIT),
    ("moon-bg", program("The first reference image as a full-bleed backdrop",
                        ["Harvest Moon Festival"], [("moon.png", "backdrop")]), WIDE),
    ("horse-right", program("Equestrian club poster, the first reference image on the right",
                            ["Riverside Riding Club", "Lessons for all ages"], [("horse.png", "right")]), SQUARE),
    ("menu", program("Vintage cafe menu cover in cream and brown",
                     ["Le Petit Bistro", "Soups, salads and fresh bread since 1962"]), PORTRAIT),
    ("motor", program("Motorcycle show banner", ["SPEED WEEK", "Vintage bikes and racing legends",
                                                  "Free entry"], [("motorcycle_left.png", "")]), WIDE),
    ("cat-bottom", program("Pet food ad, the first reference image at the bottom", ["Happy Cats",
                           "Grain free recipes"], [("chelsea.png", "bottom")]), PORTRAIT),
    ("hubble-bg", program("Science lecture poster; the background is the first reference image",
                          ["Deep Field", "A public lecture on the early universe", "Room 204"],
                          [("hubble_deep_field.jpg", "background")]), SQUARE),
    ("mono", program("Hacker meetup poster in a monospace typewriter style, green on black",
                     ["HACK THE PLANET", "Bring your own laptop"]), WIDE),
    ("sunset", program("Sunset beach party poster", ["Summer Sessions", "Live music on the sand",
                                                     "July 14", "Pier 39"]), SQUARE),
    ("coffee-astro", program("Two reference images as a collage", ["Fuel for Explorers"],
                             [("coffee.png", ""), ("astronaut.png", "")]), PORTRAIT),
    ("quote", program("Elegant quote card in lavender",
                      ["Not all those who wander are lost, but some of them are looking for coffee"]), SQUARE),
    ("bg-and-inset", program("Poster with the first reference image as background and the second as an inset on "
                             "the right", ["Wild Hearts", "A documentary about horses and people"],
                             [("grass.png", "background"), ("horse.png", "right")]), WIDE),
]


@pytest.fixture(scope="module")
def renderer():
    return make_renderer("layout")


@pytest.mark.parametrize("name,prog,size", CASES, ids=[c[0] for c in CASES])
def test_ocr_finds_every_text_constraint(renderer, tmp_path, name, prog, size):
    image, report = render_with_report(renderer, prog, size=size, seed=3)
    assert image.size == size and report["width"], report
    path = tmp_path / f"{name}.png"
    image.save(path)
    result = verify_image(path, prog)
    missing = [c for c in result["constraints"] if not c["found"]]
    assert not missing, f"{name}: {missing}\nOCR read: {result['ocr_text']}"
    assert result["text_score"] == 1.0


def test_same_program_and_seed_give_identical_pixels(renderer):
    prog = CASES[1][1]
    a = np.asarray(renderer.render(prog, size=(512, 512), seed=7))
    b = np.asarray(renderer.render(prog, size=(512, 512), seed=7))
    assert np.array_equal(a, b)


def test_default_sizes_follow_the_program():
    r = LayoutRenderer()
    assert r.render(program("A concert poster", ["X1"])).size == (880, 1184)  # 3:4 near 1 MP
    assert r.render(program("A wide banner", ["X1"])).size[0] > 1.7 * r.render(program("A wide banner", ["X1"])).size[1]
    assert r.render(program("A 1:1 logo card", ["X1"])).size == (1024, 1024)


def test_text_sits_on_readable_colours():
    for prompt in ["yellow and white poster", "black and navy", "pastel pink", "a poster", "jazz"]:
        pal = build_palette(program(prompt, []), [])
        assert contrast_ratio(pal["ink"], pal["bg"]) >= 4.5, (prompt, pal)
        assert contrast_ratio(pal["ink"], pal["bg2"]) >= 4.5, (prompt, pal)


def test_prompt_colours_and_placement_hints():
    assert prompt_colors("navy and orange")[:2] == [(22, 36, 82), (236, 124, 36)]
    prog = program("The second reference image sits on the right. Put the first reference image at the top.",
                   ["A"], [("coffee.png", ""), ("horse.png", "")])
    assert placement_hints(prog) == ["top", "right"]


def test_roles_make_a_short_string_the_title():
    roles = assign_roles(["A very long slogan that would make a poor title at all", "SALE", "today"])
    assert roles[0] == ("SALE", "title") and [r for _, r in roles] == ["title", "subtitle", "body"]


@pytest.mark.parametrize("box", [(10, 10, 200, 60), (0, 0, 90, 400), (5, 5, 700, 120)])
def test_fitted_text_never_leaves_its_box(box):
    items = assign_roles(["SUPERCALIFRAGILISTICEXPIALIDOCIOUS", "a subtitle with several words in it",
                          "body text " * 6])
    lines = fit_block(items, box, {"title": Style("sans", True)}, min_px=8)
    x0, y0, x1, y1 = box
    assert lines
    for ln in lines:
        assert x0 <= ln.x and ln.x + ln.width <= x1 + 1, ln
        assert y0 <= ln.y and ln.y + ln.height <= y1 + 1, ln
    assert "".join(ln.text.replace(" ", "") for ln in lines).startswith("SUPERCALIFRAGILISTIC")


# ---------------------------------------------------------------- bad input

def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG that declares w x h but holds almost no data (what an attacker or a bad export gives)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _with_ref(path: Path) -> Program:
    return Program(gen_prompt="a poster of the first reference image", constraints=[Constraint(kind="text", text="Hi")],
                   reference_images=[Reference(img_id="IMG_001", note="", path=str(path))])


def test_missing_reference_file_is_a_clear_error(renderer, tmp_path):
    with pytest.raises(RenderError, match=r"IMG_001: file not found at .*nope\.png; check the path"):
        renderer.render(_with_ref(tmp_path / "nope.png"))


def test_corrupt_reference_is_a_clear_error(renderer, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    with pytest.raises(RenderError, match=r"IMG_001: .*broken\.jpg is not a readable image \(corrupt"):
        renderer.render(_with_ref(bad))
    truncated = tmp_path / "truncated.png"
    Image.new("RGB", (300, 300), (200, 30, 30)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:120])
    with pytest.raises(RenderError, match="truncated.png is (corrupt or truncated|not a readable image)"):
        renderer.render(_with_ref(truncated))


def test_huge_reference_is_refused_before_decoding(renderer, tmp_path):
    huge = tmp_path / "huge.png"
    _png_header_only(huge, 20000, 20000)
    with pytest.raises(RenderError, match=r"huge\.png has 400 MP, above the 64 MP limit; downscale"):
        renderer.render(_with_ref(huge))
    big = tmp_path / "big.png"  # under Pillow's own bomb limit, over ours: still refused before decoding
    _png_header_only(big, 10000, 8000)
    with pytest.raises(RenderError, match=r"big\.png is 10000x8000, 80 MP, above the 64 MP limit"):
        renderer.render(_with_ref(big))


def test_empty_program_is_a_clear_error(renderer):
    with pytest.raises(RenderError, match="the program is empty.*write at least a gen_prompt"):
        renderer.render(Program(gen_prompt="  "))
    with pytest.raises(RenderError, match="empty or malformed"):
        render_with_report(renderer, {"gen_prompt": ""})


def test_reference_without_path_and_bad_sizes(renderer):
    prog = Program(gen_prompt="x", reference_images=[Reference(img_id="IMG_001")])
    with pytest.raises(RenderError, match="IMG_001 has no file path"):
        renderer.render(prog)
    with pytest.raises(RenderError, match="out of range"):
        renderer.render(program("x", ["a"]), size=(20000, 100))


def test_unknown_spec_lists_the_known_ones():
    with pytest.raises(RenderError, match="unknown renderer 'dalle'.*layout.*diffusers"):
        make_renderer("dalle")


def test_too_much_text_for_a_tiny_canvas_is_refused_not_overflowed(renderer):
    prog = program("a poster", ["SUPERCALIFRAGILISTIC " * 4, "and a second long line of small print " * 3])
    with pytest.raises(RenderError, match="does not fit a .* text area legibly; render at a larger size"):
        renderer.render(prog, size=(64, 64))


def test_cjk_text_is_set_with_a_cjk_font_and_read_back():
    from genevolve.renderers.typeset import wide_font_path

    if wide_font_path() is None:
        pytest.skip("no CJK font installed (scripts/setup-tests.sh installs Debian's fonts-noto-cjk)")
    prog = program("Lantern festival banner in red and gold", ["新年快乐", "HAPPY NEW YEAR"])
    image, report = render_with_report(make_renderer("layout"), prog, size=WIDE)
    assert not any("CJK" in w for w in report["warnings"])
    found = {c["text"]: c["found"] for c in verify_image(image, prog)["constraints"]}
    assert found == {"新年快乐": True, "HAPPY NEW YEAR": True}


def test_a_missing_cjk_font_is_reported_not_silent(monkeypatch):
    import genevolve.renderers.typeset as typeset

    # Simulate a machine without any CJK font (the lookup is cached, so replace it).
    monkeypatch.setattr(typeset, "wide_font_path", lambda bold=False: None)
    prog = program("Lantern festival banner", ["新年快乐"])
    _, report = render_with_report(make_renderer("layout"), prog, size=SQUARE)
    assert any("fonts-noto-cjk" in w for w in report["warnings"])
    _, report = render_with_report(make_renderer("layout"), program("Plain banner", ["HELLO"]), size=SQUARE)
    assert report["warnings"] == []


# ---------------------------------------------------------------- subjects: what was asked, drawn

def _requested(request: str, refs: list[tuple[str, str]] = ()) -> Program:
    """A program as the agent makes it: the request restated, constraints derived from the request."""
    from genevolve.program import derive_constraints

    prog = program(request, [], refs)
    prog.constraints = derive_constraints(request, prog)
    return prog


def _emoji_font():
    from genevolve.renderers.pictograms import emoji_font_path

    if emoji_font_path() is None:
        pytest.skip("no colour emoji font (scripts/setup-tests.sh installs Debian's fonts-noto-color-emoji)")


def _colourful(image, box) -> float:
    """Share of strongly saturated pixels inside a box: a pictogram has them, a flat backdrop has none."""
    crop = np.asarray(image.crop(tuple(box)).convert("HSV"))
    return float(((crop[..., 1] > 120) & (crop[..., 2] > 90)).mean())


def _subjects(report) -> dict:
    return {d["name"]: d for d in report["layout"]["subjects"]}


FARMERS = ('A poster for a farmers market on Saturday June 7 titled "GREEN ROOTS" with baskets of tomatoes and '
           'three sunflowers')


def test_farmers_market_poster_shows_the_subjects_and_the_date(renderer, tmp_path):
    _emoji_font()
    prog = _requested(FARMERS)
    image, report = render_with_report(renderer, prog, size=PORTRAIT, seed=1)
    image.save(tmp_path / "farmers.png")
    drawn = _subjects(report)
    assert set(drawn) == {"baskets", "tomatoes", "sunflowers"}, drawn
    assert drawn["sunflowers"]["drawn"] == 3 and drawn["sunflowers"]["pictogram"] == "SUNFLOWER"
    assert drawn["tomatoes"]["pictogram"] == "TOMATO" and drawn["tomatoes"]["container"] == "baskets"
    assert drawn["baskets"]["pictogram"] == "BASKET"
    # The pictograms are really there: each sunflower box holds strong yellow/brown colour.
    for box in drawn["sunflowers"]["boxes"]:
        assert _colourful(image, box) > 0.2, box
    # Tomatoes sit in their baskets: each tomato's centre is inside a basket box.
    baskets = drawn["baskets"]["boxes"]
    for x0, y0, x1, y1 in drawn["tomatoes"]["boxes"]:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        assert any(b[0] <= cx <= b[2] and b[1] - 0.1 * (b[3] - b[1]) <= cy <= b[3] for b in baskets)
    # Every text the user wants is set and read back by OCR, the date included.
    result = verify_image(tmp_path / "farmers.png", prog)
    assert {c["text"]: c["found"] for c in result["constraints"]} == {"GREEN ROOTS": True, "Saturday June 7": True}
    # Subject boxes never cover the text.
    text_top = min(ln["box"][1] for ln in result["ocr_lines"])
    assert all(b[3] <= text_top for d in drawn.values() for b in d["boxes"])


def test_things_in_a_container_are_drawn_in_it(renderer):
    """"Green apples in a brown basket on a table" drew the apples beside the basket: only "baskets
    of tomatoes" gave a container. "X in a Y" does now, where Y holds things; "a man in a hat" not."""
    _emoji_font()
    _, report = render_with_report(renderer, _requested("Green apples in a brown basket on a table."), seed=1)
    drawn = _subjects(report)
    assert drawn["green apples"]["container"] == "basket"
    (basket,) = drawn["basket"]["boxes"]
    for x0, y0, x1, y1 in drawn["green apples"]["boxes"]:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        assert basket[0] <= cx <= basket[2] and basket[1] - 0.1 * (basket[3] - basket[1]) <= cy <= basket[3]
    worn = {c.subject: c.object for c in derive_constraints("A man in a hat.") if c.kind == "subject"}
    assert worn == {"man": None, "hat": None}


def _drawn_hues(image, box) -> np.ndarray:
    """Hues (PIL's 0-255 scale) of the saturated pixels in a box that are not the surface."""
    rgb = np.asarray(image.crop(tuple(box)).convert("RGB")).reshape(-1, 3).astype(int)
    hsv = np.asarray(image.crop(tuple(box)).convert("HSV")).reshape(-1, 3)
    surface = np.asarray(image.getpixel((4, 4)), dtype=int)
    glyph = (np.abs(rgb - surface).sum(axis=1) > 60) & (hsv[:, 1] > 100) & (hsv[:, 2] > 60)
    return hsv[glyph, 0]


def _red(hues) -> float:
    return float(((hues < 12) | (hues >= 245)).mean()) if len(hues) else 0.0


def test_a_subjects_colour_is_drawn_on_it_not_on_the_surface(renderer):
    """"A red bicycle leaning on a blue door": the bicycle is red and the door blue (the emoji
    font draws both in other colours), and red is not the surface any more."""
    _emoji_font()
    image, report = render_with_report(renderer, _requested("A red bicycle leaning on a blue door."), size=SQUARE)
    drawn = _subjects(report)
    assert (drawn["bicycle"]["colour"], drawn["door"]["colour"]) == ("red", "blue"), drawn
    assert _red(_drawn_hues(image, drawn["bicycle"]["boxes"][0])) > 0.8
    door = _drawn_hues(image, drawn["door"]["boxes"][0])
    assert len(door) and float(((door >= 140) & (door < 185)).mean()) > 0.8
    surface = image.convert("HSV").getpixel((4, 4))
    assert not (surface[1] > 100 and _red(np.array([surface[0]]))), surface
    # A colour that binds no drawn subject still colours the surface: "a red poster of a bicycle".
    image, report = render_with_report(renderer, _requested("A red poster of a bicycle."), size=SQUARE)
    assert "colour" not in _subjects(report)["bicycle"]
    surface = image.convert("HSV").getpixel((4, 4))
    assert surface[1] > 100 and _red(np.array([surface[0]])), surface


def test_three_teapots_in_a_triangle(renderer):
    from genevolve.judges.structure import arrangement_holds

    _emoji_font()
    image, report = render_with_report(renderer, _requested("three identical teapots in a triangle"), size=SQUARE)
    teapots = _subjects(report)["teapots"]
    assert teapots["drawn"] == 3 and teapots["form"] == "pictogram" and teapots["arrangement"] == "triangle"
    assert arrangement_holds(teapots["boxes"], "triangle") and not arrangement_holds(teapots["boxes"], "row")
    tops = sorted(b[1] for b in teapots["boxes"])
    assert tops[0] < tops[1] == tops[2]  # one apex, two below it
    for box in teapots["boxes"]:
        assert _colourful(image, box) > 0.1


def test_stated_positions_are_kept(renderer):
    from genevolve.judges.structure import relation_holds

    _, report = render_with_report(renderer, _requested("a red cube to the left of a blue sphere, a cat above the "
                                                        "table, two dogs in a row"), size=SQUARE)
    d = _subjects(report)
    assert relation_holds(d["red cube"]["boxes"], d["blue sphere"]["boxes"], "left_of")
    assert relation_holds(d["cat"]["boxes"], d["table"]["boxes"], "above")
    assert d["dogs"]["drawn"] == 2 and d["dogs"]["arrangement"] == "row"
    # A coloured shape with no pictogram is a placeholder panel, tinted as named.
    assert d["red cube"]["form"] == "box" and "red cube" in report["layout"]["placeholders"]


def test_a_named_landmark_is_a_placeholder_panel_not_a_generic_pictogram(renderer, tmp_path):
    prog = _requested("A photo of the Sydney Opera House at dusk")
    image, report = render_with_report(renderer, prog, size=SQUARE)
    opera = _subjects(report)["sydney opera house"]
    assert opera["form"] == "box" and "pictogram" not in opera  # not a house emoji
    assert "sydney opera house" in report["layout"]["placeholders"]  # the report names it…
    image.save(tmp_path / "opera.png")
    assert verify_image(tmp_path / "opera.png", prog)["ocr_text"] == []  # …the image carries no words


def test_a_bound_reference_photo_draws_its_subject(renderer):
    prog = _requested("Two cats in a row on a poster", refs=[("chelsea.png", "appearance of the cat")])
    image, report = render_with_report(renderer, prog, size=SQUARE)
    cats = _subjects(report)["cats"]
    assert cats["form"] == "reference" and cats["reference"] == 0 and cats["drawn"] == 2
    for box in cats["boxes"]:  # the photo's texture, not a flat tile
        assert np.asarray(image.crop(tuple(box)).convert("L")).std() > 25


def test_no_subject_means_no_shapes_pretending_to_be_content(renderer):
    prog = program("A teal poster", ["QUIET"])
    image, report = render_with_report(renderer, prog, size=PORTRAIT)
    assert report["layout"]["subjects"] == []
    # Above the type there is only the background: no motif, rings or stripes.
    result = verify_image(image, prog)
    top = min(ln["box"][1] for ln in result["ocr_lines"])
    above = np.asarray(image.crop((0, 0, image.width, max(1, top - 60))).convert("L")).astype(float)
    assert above.std() < 12


def test_without_an_emoji_font_subjects_are_labelled_boxes_and_it_says_so(monkeypatch, renderer):
    import genevolve.renderers.pictograms as pictograms

    for fn in (pictograms.emoji_font_path, pictograms._font, pictograms._covered, pictograms._glyph):
        fn.cache_clear()
    monkeypatch.setattr(pictograms, "EMOJI_FONT_CANDIDATES", ())
    monkeypatch.delenv("GENEVOLVE_EMOJI_FONT", raising=False)
    try:
        _, report = render_with_report(renderer, _requested("three teapots in a triangle"), size=SQUARE)
    finally:
        for fn in (pictograms.emoji_font_path, pictograms._font, pictograms._covered, pictograms._glyph):
            fn.cache_clear()
    teapots = _subjects(report)["teapots"]
    assert teapots["form"] == "box" and teapots["drawn"] == 3
    assert any("fonts-noto-color-emoji" in w for w in report["warnings"])


@pytest.mark.parametrize("size", [(64, 64), (1280, 360), (360, 1280), (512, 512)])
def test_subjects_stay_inside_the_canvas_at_any_size(renderer, size):
    requests = [FARMERS, "three identical teapots in a triangle", "a red cube to the left of a blue sphere",
                "twelve eggs in a grid above a bowl, two cats next to a dog", 'A flyer "OPEN" with 50 stars']
    for request in requests:
        try:
            image, report = render_with_report(renderer, _requested(request), size=size)
        except RenderError as exc:  # a canvas too small for the text says so; it never overflows
            assert "does not fit" in str(exc) and size == (64, 64)
            continue
        for d in report["layout"]["subjects"]:
            assert d["drawn"] == len(d["boxes"])
            for x0, y0, x1, y1 in d["boxes"]:
                assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height, (request, size, d)
        stars = [d for d in report["layout"]["subjects"] if d["name"] == "stars"]
        if stars and stars[0]["drawn"]:
            assert stars[0]["drawn"] == 24 and "50 asked" in stars[0]["note"]


def test_a_photo_placed_by_position_is_not_bound_to_a_subject_it_does_not_show(renderer):
    _emoji_font()
    prog = _requested('Launch poster titled "GO", the first reference image at the top, a cat next to a dog',
                      refs=[("rocket.jpg", "")])
    _, report = render_with_report(renderer, prog, size=PORTRAIT)
    assert report["layout"]["composition"] == "split"  # the photo keeps its place in the layout
    assert {d["name"]: d["form"] for d in report["layout"]["subjects"]} == {"cat": "pictogram", "dog": "pictogram"}
