"""Requests with human variety: reproducible, the shapes they promise, and template builds unchanged."""

from __future__ import annotations

import random

from genevolve.data.recipes import generate_recipes, load_pools, names_entity
from genevolve.data.variety import VARIETY_KINDS, dense_requests, restyle_quotes, variety_request
from genevolve.program import quoted_strings


def test_a_variety_build_is_reproducible_and_keeps_the_template_recipes():
    plain = generate_recipes(48, seed=3)
    mixed = generate_recipes(48, seed=3, variety=0.5)
    again = generate_recipes(48, seed=3, variety=0.5)
    assert [r.to_dict() for r in mixed] == [r.to_dict() for r in again]
    kinds = {r.variety for r in mixed}
    assert "" in kinds and len(kinds - {""}) >= 4
    # A template recipe is the same request it was in a build without variety.
    for a, b in zip(plain, mixed):
        if not b.variety:
            assert a.request == b.request
    assert all(r.variety == "" for r in plain)


def test_each_kind_has_the_shape_it_promises():
    pools = load_pools()
    rng = random.Random(0)
    known = [n for names in pools.entity_names.values() for n in names]
    for _ in range(5):
        request, _, category, track = variety_request("quote_style", rng, pools)
        assert '"' not in request and quoted_strings(request) and category == "text_layout"
        request, _, category, track = variety_request("unknown", rng, pools)
        assert track == "knowledge" and not names_entity(request, known)
        request, _, category, track = variety_request("merged", rng, pools)
        assert "; in the same picture, " in request and request.endswith(".")
        request, _, category, track = variety_request("dense", rng, pools)
        assert len(request) > 150 and track == "quality"
        request, _, category, track = variety_request("register", rng, pools)
        assert request and track == "quality"
        request, _, category, track = variety_request("plain", rng, pools)
        assert category == "everyday" and not quoted_strings(request)
    assert set(VARIETY_KINDS) == {"dense", "quote_style", "register", "merged", "unknown", "plain"}


def test_quotes_are_restyled_and_still_read_as_texts_to_draw():
    request = 'A sign that says "OPEN LATE" with "NO. 12" underneath'
    for style in ("single", "curly"):
        restyled = restyle_quotes(request, style)
        assert '"' not in restyled and quoted_strings(restyled) == ["OPEN LATE", "NO. 12"]


def test_dense_paragraphs_leave_out_those_rewritten_from_an_eval_set():
    rows = dense_requests()
    assert len(rows) > 700
    assert not any(r["id"].startswith("dpg_partiprompts") for r in rows)
