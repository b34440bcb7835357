"""Requests with human variety, beside the recipe templates.

The templates in ``recipes`` make tidy, one-shape requests; a policy trained only on them learns the
shape, not the task (it copies the request and stops researching when the wording changes). This
module adds six kinds of request, each a different way people actually ask:

* ``dense``       — a long paragraph written by others (DPG-Bench, ``sources/dpg_bench.jsonl``):
                    several objects, their attributes, counts, positions, sometimes a quoted text;
* ``quote_style`` — a text request whose words to draw are in single or curly quotes;
* ``register``    — a template request re-worded the way people type: a question, an aside, lower
                    case, a brief for a client;
* ``merged``      — two constraints of different kinds in one request (a text and a count, a
                    relation and a colour...);
* ``unknown``     — a knowledge-style request about a place, person or event that does not exist:
                    the corpus knows nothing, so the right program says nothing it did not find;
* ``plain``       — an everyday scene with nothing to look up.

``variety_request(kind, rng, pools)`` returns ``(request, images, category, track)``; recipe ``i``
of a build draws its kind from ``(seed, i)`` alone, so builds stay reproducible and extendable.
"""

from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from pathlib import Path

VARIETY_KINDS = ("dense", "quote_style", "register", "merged", "unknown", "plain")
SOURCES = Path(__file__).resolve().parent / "sources"

_NUMBER_WORDS = r"\b(?:two|three|four|five|six|seven|eight|nine|ten|\d+)\b"
_RELATIONS = r"\b(?:left of|right of|above|below|beneath|under|on top of|behind|in front of|next to|beside)\b"


@lru_cache(maxsize=1)
def dense_requests() -> tuple[dict, ...]:
    """The DPG-Bench paragraphs that no evaluation request of ours is close to."""
    from genevolve.bench.eval_sets import load_eval_set
    from genevolve.data.recipes import training_overlaps

    rows = [json.loads(line) for line in (SOURCES / "dpg_bench.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    close = {req for req, _ in training_overlaps([r["request"] for r in rows], load_eval_set("all"))}
    return tuple(r for r in rows if r["request"] not in close)


def dense_category(text: str) -> str:
    """The quality category a paragraph mostly tests, so the judge asks for the matching skill."""
    from genevolve.program import quoted_strings

    if quoted_strings(text):
        return "text_layout"
    if re.search(_NUMBER_WORDS, text, re.IGNORECASE):
        return "counting"
    if re.search(_RELATIONS, text, re.IGNORECASE):
        return "spatial_relation"
    return "aesthetics"


def restyle_quotes(request: str, style: str) -> str:
    """``"OPEN"`` -> ``'OPEN'`` (single) or ``“OPEN”`` (curly)."""
    opening, closing = {"single": ("'", "'"), "curly": ("\u201c", "\u201d")}[style]
    return re.sub(r'"([^"]+)"', lambda m: f"{opening}{m.group(1)}{closing}", request)


# How people phrase a request when they are not writing a template. {r}: the request as written;
# {lower}: with its first letter in lower case and its last full stop dropped.
_REGISTERS = (
    "Could you make {lower}?",
    "I need an image for a client deck: {lower}.",
    "{r} Nothing fancy, just get the details right.",
    "pls draw {lower}",
    "For our newsletter — {lower}. Keep it clean.",
    "Looking for {lower}; the composition is up to you.",
    "{r} It's going on a printed flyer, so make it crisp.",
    "hey, can I get {lower}? thanks",
)


def _lower(request: str) -> str:
    """The request to go after a lead-in: no final full stop, and its first word in lower case
    unless it starts a name ("Times Square...", "Marie Curie..." keep their capitals)."""
    text = request.strip().rstrip(".")
    first, _, rest = text.partition(" ")
    if not rest[:1].isupper():
        first = first[:1].lower() + first[1:]
    return f"{first} {rest}".strip()


# For a request that is already an order ("Reimagine the cup as…"): wrappers that take a verb.
_IMPERATIVE_REGISTERS = (
    "Could you {lower}?",
    "pls {lower}",
    "{r} Thanks!",
    "For our newsletter — {lower}.",
)
_VERBS = {"reimagine", "turn", "make", "draw", "show", "create", "render", "design", "paint", "transform",
          "imagine", "place", "put", "redraw", "restyle"}


def reword(request: str, rng: random.Random) -> str:
    imperative = request.split(" ", 1)[0].lower() in _VERBS
    return rng.choice(_IMPERATIVE_REGISTERS if imperative else _REGISTERS).format(r=request.strip(),
                                                                                 lower=_lower(request))


# Invented names: none is a real place, person or event we know of, and the check in ``unknown``
# keeps any that a corpus subject happens to name out.
_SYLLABLES = ("var", "nol", "kes", "tor", "brin", "dal", "mer", "osk", "lun", "vik", "aro", "seth", "quil",
              "dov", "ham", "ren", "tal", "zor", "bel", "cav")
_UNKNOWN_TEMPLATES = (
    ("architecture_landmark", "A postcard of the {Name} Lighthouse at dusk, its red lantern room lit against a stormy sky."),
    ("architecture_landmark", "A watercolour of the {Name} Observatory on its hilltop, the dome open toward the stars."),
    ("public_figure", "A formal portrait of {First} {Last}, the founder of {Name} Ceramics, in her studio."),
    ("event", "The opening night of the {Name} Lantern Festival, paper boats floating on the river."),
    ("product", "A product shot of the {Name} X2 pocket radio on a white backdrop, its dial glowing amber."),
    ("cultural_relic", "The {Name} Hoard, a trove of silver brooches, laid out on black velvet in a museum case."),
    ("vehicle", "The {Name} Express steam locomotive crossing a stone viaduct in autumn."),
)
_FIRST = ("Edda", "Marit", "Ilse", "Noor", "Saskia", "Liva")
_LAST = ("Varnholm", "Tessaro", "Quillan", "Brodnik", "Osterlund", "Kavel")


def invented_name(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(2)).capitalize() + rng.choice(("by", "ford", "holm", "vale", "wick"))


# Everyday scenes, each object with places it plausibly sits in.
_PLAIN_SCENES = (
    ("a bowl of lemons", ("on a blue kitchen table", "on a white shelf", "by a sunny window")),
    ("a stack of folded towels", ("on a white shelf", "on a wicker stool", "beside a bathtub")),
    ("a potted fern", ("by a sunny window", "on a wooden porch", "on a white shelf")),
    ("a pair of worn sneakers", ("on a wooden porch", "beside a front door", "on a gym floor")),
    ("a glass teapot", ("on a blue kitchen table", "on a tray by a window", "on a café counter")),
    ("an open notebook and a pencil", ("on a wooden desk", "on a picnic blanket", "on a café counter")),
    ("a basket of apples", ("on a picnic blanket", "on a wooden porch", "on a kitchen table")),
    ("a sleeping dog", ("on a wooden porch", "on a rug by a fireplace", "in a quiet park")),
    ("a bicycle leaning on a fence", ("in a quiet park", "on a village street", "in a snowy garden")),
    ("a loaf of bread", ("on a wooden cutting board", "on a kitchen table", "in a bakery window")),
)
_PLAIN_LIGHT = ("in soft morning light", "at golden hour", "under an overcast sky", "lit by a warm lamp",
                "in bright midday sun")


def variety_request(kind: str, rng: random.Random, pools) -> tuple[str, list[str], str, str]:
    """One request of ``kind``: ``(request, images, category, track)``."""
    from genevolve.data.recipes import KNOWLEDGE, QUALITY, QUALITY_CATEGORIES, _draw, names_entity

    if kind == "dense":
        text = rng.choice(dense_requests())["request"]
        return text, [], dense_category(text), QUALITY
    if kind == "quote_style":
        request, images = _draw(rng, pools, "text_layout")
        return restyle_quotes(request, rng.choice(("single", "curly"))), images, "text_layout", QUALITY
    if kind == "register":
        category = rng.choice(QUALITY_CATEGORIES)
        request, images = _draw(rng, pools, category)
        return reword(request, rng), images, category, QUALITY
    if kind == "merged":
        first, second = rng.sample(("text_layout", "counting", "spatial_relation", "attribute_binding"), 2)
        a, images = _draw(rng, pools, first)
        b, more = _draw(rng, pools, second)
        return f"{a.strip().rstrip('.')}; in the same picture, {_lower(b)}.", images + more, first, QUALITY
    if kind == "unknown":
        known = [n for names in pools.entity_names.values() for n in names]
        for _ in range(20):
            category, template = rng.choice(_UNKNOWN_TEMPLATES)
            request = template.format(Name=invented_name(rng), First=rng.choice(_FIRST), Last=rng.choice(_LAST))
            if not names_entity(request, known):
                return request, [], category, KNOWLEDGE
        raise RuntimeError("every invented name collided with a corpus subject")
    if kind == "plain":
        thing, places = rng.choice(_PLAIN_SCENES)
        request = f"{thing[:1].upper()}{thing[1:]} {rng.choice(places)}, {rng.choice(_PLAIN_LIGHT)}."
        return request, [], "everyday", QUALITY
    raise ValueError(f"unknown variety kind '{kind}': use one of {', '.join(VARIETY_KINDS)}")


def variety_kind(seed: int, index: int, share: float) -> str | None:
    """Which variety kind recipe ``index`` is, or None for a template recipe (``share`` of them are)."""
    rng = random.Random(f"genevolve-variety:{seed}:{index}")
    if rng.random() >= share:
        return None
    return VARIETY_KINDS[rng.randrange(len(VARIETY_KINDS))]
