"""Everyday English for reading requests: word lists and the small extractors built on them.

Rules, not a parser: they read the kind of requests an image generator gets ("three red apples
on a wooden table, a cat beside them") well enough to decide what to look up, which subjects
deserve a picture and which skills apply. The planner asks them that, and ``relevance`` uses the
same lists to tell everyday words from names, hence a module below both. Named entities come from
``genevolve.subjects``.
"""

from __future__ import annotations

import itertools
import re
from typing import Sequence

from genevolve.program import count_constraints, relation_constraints, strip_quoted
from genevolve.subjects import ANIMALS, LEADING_NON_NAMES, PEOPLE, modifier_use  # noqa: F401  (re-exported)


COLOURS = {"red", "blue", "green", "yellow", "orange", "purple", "pink", "black", "white", "grey", "gray",
           "brown", "golden", "silver", "teal", "cyan", "magenta", "violet", "turquoise", "beige", "crimson",
           "navy", "emerald", "scarlet", "ivory", "indigo"}
ATTRIBUTES = COLOURS | {"wooden", "glass", "metal", "metallic", "ceramic", "plastic", "paper", "stone",
                        "marble", "leather", "velvet", "striped", "spotted", "checkered", "fluffy", "tiny",
                        "huge", "small", "large", "tall", "round", "square", "triangular", "knitted",
                        "woolen", "rusty", "shiny", "matte", "transparent",
                        # sizes ("a big bear and a small squirrel", "a tall skyscraper and a short cabin")
                        "big", "short", "long", "wide", "narrow", "thin", "thick"}
# Shapes ("an oblong cucumber and a teardrop plum").
SHAPES = {"oblong", "teardrop", "pentagonal", "hexagonal", "octagonal", "spherical", "cylindrical", "conical",
          "cubic", "circular", "rectangular", "oval", "crescent", "pyramidal", "diamond", "round", "square",
          "triangular"}
ATTRIBUTES |= SHAPES
# Words about what a thing looks like: a fact that has them helps the renderer more than its history.
VISUAL_WORDS = COLOURS | {
    "painted", "colour", "color", "coloured", "colored", "shape", "shaped", "tall", "wide", "curved",
    "legs", "arches", "lattice", "glass", "metal", "stone", "brick", "wood", "wooden", "steel", "iron",
    "titanium", "frame", "roof", "tower", "dome", "logo", "label", "script", "font", "stripes", "striped",
    "pattern", "texture", "surface", "floodlit", "lit", "glow", "made", "looks", "appearance", "height",
    "metres", "meters", "feet", "spire", "facade", "façade", "columns", "camera", "bump", "finish",
}
# Nouns that never make a subject worth a picture.
STOP_NOUNS = {"style", "image", "picture", "photo", "scene", "background", "foreground", "text", "title",
              "words", "lettering", "font", "light", "lighting", "colours", "colors", "mood", "shot",
              "composition", "detail", "details", "quality", "version", "view", "them", "it", "they",
              "each", "other", "him", "her", "one", "ones"}

_SUBJECT_FRAMES = re.compile(
    r"\b(?:photo(?:graph)?|picture|image|poster|illustration|painting|render(?:ing)?|drawing|shot|"
    r"portrait|cover|ad|advertisement|still life|scene|sketch|view)\s+of\s+", re.IGNORECASE)
_SUBJECT_CUT = re.compile(r",|\.|;|:|\b(?:with|in|on|at|under|against|for|while|that|which|where|"
                          r"titled|reading|saying|beside|next|behind|above|below|left|right|"
                          # a relation or a transformation ends the subject too: "a rocket to the right
                          # of…" is a rocket, "a motorcycle reimagined as ice" a motorcycle
                          r"to|as|near|over|inside|underneath|beneath|between|around|onto|into|atop|"
                          r"reimagined|transformed|turned|made|from|"
                          r"arranged|(?<!-)and(?!-)|is|are|was|were|sits|sit|stands|stand|lies|rests|hangs)\b",
                          re.IGNORECASE)


def _is_past_verb(word: str) -> bool:
    """A word that, after a noun, ends the subject: "the motorcycle parked…", "a chopper decorated
    with…". Short -ed words and -eed/-bed are nouns or colours ("bed", "red", "steed", "seabed")."""
    return len(word) > 4 and word.endswith("ed") and not word.endswith(("eed", "bed")) and word not in COLOURS


# "black and white cat" is one subject with two colours, not a subject called "black".
_COLOUR_PAIR = re.compile(rf"\b({'|'.join(sorted(COLOURS))})\s+and\s+({'|'.join(sorted(COLOURS))})\b",
                          re.IGNORECASE)


def words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'-]*", text)]


def singular(word: str) -> str:
    w = word.lower()
    irregular = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
                 "geese": "goose", "teeth": "tooth", "sheep": "sheep", "fish": "fish", "deer": "deer"}
    if w in irregular:
        return irregular[w]
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("ches", "shes", "xes", "sses")):
        return w[:-2]
    if w.endswith("s") and not w.endswith("ss") and len(w) > 3:
        return w[:-1]
    return w


# How people wrap a request when they type it ("hey, can I get …? thanks", "For our newsletter — …").
# The renderer needs the scene, not the greeting: the wrapper is dropped, every word of the scene kept.
_LEAD_INS = [
    # A greeting only when it greets ("hey, …", "hi can you …"): "Hello Kitty" and "So Long" are names.
    r"(?:hey|hi|hello|ok|okay)(?:[,!]\s*|\s+(?=(?:can|could|would|will|pls|please|plz|i)\b))",
    r"(?:could|can|would|will) you (?:please |pls )?(?:make|draw|create|generate|render|design|paint|do|give|get)"
    r"(?: me)?\s+",
    r"(?:could|can|may) (?:i|we) (?:please |pls )?(?:get|have|see)\s+",
    r"(?:please|pls|plz)\s+(?:(?:make|draw|create|generate|render|design|paint)(?: me)?\s+)?",
    r"i(?:'d| would) like(?: to see)?\s+(?:an? (?:image|picture|illustration|photo)(?: of)?:?\s+)?",
    r"i need an? (?:image|picture|illustration|photo|visual)(?: for [^:]{1,60})?:\s*",
    # "For our newsletter — …": a purpose, not a subject ("For the Crucible Theatre: …" stays).
    r"for (?:our|my|a|the) (?:[\w'-]+\s+){0,3}(?:newsletter|deck|blog(?: post)?|website|site|flyer|campaign|"
    r"presentation|slides?|post|brochure|feed|thumbnail|banner|client)\s*[—:]\s*",
    r"looking for\s+",
]
# A sign-off follows punctuation ("…? thanks", "…. Thanks!"): "a card that says thank you" keeps its words.
_SIGN_OFF = re.compile(r"(?<=[,;.!?])\s*(?:thanks|thank you|thx|ty|cheers)[\s.!]*$", re.IGNORECASE)


def without_framing(request: str) -> str:
    """The request without a greeting, a "could you make", a "for our newsletter —" or a "thanks"."""
    text = request.strip()
    stripped = True
    while stripped:
        stripped = False
        for pattern in _LEAD_INS:
            m = re.match(pattern, text, re.IGNORECASE)
            if m and m.end() < len(text):
                text, stripped = text[m.end():], True
    was_question = text != request.strip()
    text = _SIGN_OFF.sub("", text).strip().rstrip(",;").strip()
    if was_question:  # "could you make X?" is the scene X, not a question to the renderer
        text = re.sub(r"\?(\s|$)", r".\1", text, count=1) if text.count("?") == 1 else text
    return text or request.strip()


def extract_subjects(request: str, entities: Sequence[str] = ()) -> list[str]:
    """Distinct visual subjects, one image search each: entities, then counted, animate and
    related nouns, else the main noun phrase of the request."""
    plain = strip_quoted(request)
    out: list[str] = list(entities)
    covered = {singular(w) for e in entities for w in e.split()}

    def add(noun: str):
        noun = noun.strip().lower()
        nouns = {singular(w) for w in noun.split()}
        if not noun or noun in STOP_NOUNS or nouns & covered or all(w in ATTRIBUTES for w in noun.split()):
            return
        out.append(noun)
        covered.update(nouns)

    for c in count_constraints(request):
        add(singular(c.subject))
    for c in relation_constraints(request):
        for side in (c.subject, c.object):
            side_words = [w for w in side.split() if w not in ATTRIBUTES]
            if side_words:
                add(singular(side_words[-1]))
    for w in words(plain):
        if singular(w) in ANIMALS:
            add(singular(w))
    # "I need an image for a client deck: a bowl of ramen…" shows a bowl of ramen, not "need".
    add(_main_subject(without_framing(plain)))
    return out


def lost_subjects(prompt: str, request: str) -> list[str]:
    """The head nouns of the request's subjects (``extract_subjects``) that ``prompt`` never names,
    singular forms compared: "robot" for "a robot holding a sign…" described as "A sign with…"."""
    have = {singular(w) for w in words(prompt)}
    return [h for h in dict.fromkeys(subject_heads(request)) if h not in have]


def subject_heads(request: str) -> list[str]:
    """The head noun of each subject of the request (``extract_subjects``), singular: "robot" for
    "a robot holding a sign". An ordinal is no thing to show ("the first image" names an input)."""
    heads = [singular(words(s)[-1]) for s in extract_subjects(request) if words(s)]
    return [h for h in heads if h not in _ORDINAL_WORDS]


_ORDINAL_WORDS = {"first", "second", "third", "fourth", "fifth", "last", "next", "other"}


# An instruction opens with its verb ("reimagine the astronaut…", "turn the cat into…"): the
# subject is the verb's object, not the verb.
_OPENING_VERB = re.compile(
    r"^\s*(?:(?:please|pls|plz)\s+)?(?:reimagine|redraw|restyle|recreate|remake|turn|transform|convert|"
    r"show|make|draw|create|generate|render|paint|design|depict|imagine|put|place|give|edit|change|swap|"
    r"replace|combine|blend|merge)\b(?:\s+(?:me|us))?\s+(?=\S)", re.IGNORECASE)


def _main_subject(plain: str) -> str:
    plain = _COLOUR_PAIR.sub(r"\1-and-\2", plain)
    m = _SUBJECT_FRAMES.search(plain)
    rest = plain[m.end():] if m else _OPENING_VERB.sub("", plain, count=1)
    rest = _SUBJECT_CUT.split(rest, maxsplit=1)[0]
    head = [w for w in re.findall(r"[A-Za-z][A-Za-z'-]*", rest)
            if w.lower() not in LEADING_NON_NAMES and w.lower() not in {"of", "very", "highly"}]
    for i, w in enumerate(head[1:], start=1):  # "honey pouring onto…" -> "honey"
        # ...but "a yellow dining table" is a table: an -ing word after attributes only, or in a
        # known two-word noun, belongs to the noun.
        if all(h.lower() in ATTRIBUTES for h in head[:i]) or \
                " ".join(x.lower() for x in head[i:i + 2]) in COMPOUND_NOUNS:
            continue
        if w.lower().endswith("ing") or _is_past_verb(w.lower()):  # "motorcycle parked in…"
            head = head[:i]
            break
    return " ".join(head[:4]).lower()


def countable_objects(plain: str) -> list[str]:
    """Nouns that are counted ("three apples") or carry an attribute ("red cube"), in order."""
    nouns = [c.subject for c in count_constraints(plain)]
    nouns += [n for _, n in attribute_pairs(plain)]
    return list(dict.fromkeys(nouns))


# Two-word nouns the attribute belongs to as a whole: "a yellow dining table" is a yellow table,
# not a yellow "dining". COCO's multi-word classes (GenEval, T2I-CompBench draw on them) and kin.
COMPOUND_NOUNS = {
    "dining table", "traffic light", "fire hydrant", "stop sign", "parking meter", "sports ball",
    "baseball bat", "baseball glove", "tennis racket", "wine glass", "hot dog", "potted plant",
    "cell phone", "teddy bear", "hair drier", "hair dryer", "computer keyboard", "computer mouse",
    "ice cream", "bell pepper", "polar bear", "fire truck", "police car", "park bench", "coffee mug",
    "tea cup", "fire engine", "street lamp", "picture frame", "alarm clock", "water bottle",
}
_FUNCTION_WORDS = {"and", "with", "the", "a", "an", "of", "in", "on"}


def _noun_at(tokens: list[str], j: int) -> str:
    """The noun an attribute before tokens[j] describes: a known two-word noun is taken whole
    ("dining tables"), else the one word. A list, not a rule: "a red building stands" must not
    read as a two-word noun."""
    if j + 1 < len(tokens) and f"{tokens[j]} {singular(tokens[j + 1])}" in COMPOUND_NOUNS:
        return f"{tokens[j]} {tokens[j + 1]}"
    return tokens[j]


def attribute_pairs(plain: str) -> list[tuple[str, str]]:
    """(attribute, noun) pairs such as ("red", "cube") or ("yellow", "dining table"), distinct by
    attribute and by noun."""
    pairs: list[tuple[str, str]] = []
    plain = re.sub(r"\b(?:golden|blue) hour\b", " ", plain, flags=re.IGNORECASE)
    # A comma or a full stop ends the phrase: "hues of purple, yellow, and green, their forms" pairs
    # no colour with "their", "a large, dark red fish" no size with "dark".
    carried = ""
    for phrase, stop in itertools.zip_longest(*[iter(re.split(r"([,;:.!?()]+)", plain))] * 2, fillvalue=""):
        tokens = words(phrase)
        found = []
        for i, w in enumerate(tokens[:-1]):
            if w not in ATTRIBUTES:
                continue
            j = i + 1
            while j < len(tokens) and tokens[j] in ATTRIBUTES:
                j += 1
            if j < len(tokens) and _could_be_noun(tokens[j]):
                found.append((w, _noun_at(tokens, j)))
        # ... except between coordinate adjectives of one noun: "a white, clean bathroom" gives the
        # bathroom its white. One attribute a noun: a colour first, as without the comma ("a green,
        # glass bottle" is green), else the phrase's own ("a large, dark red fish" stays red).
        if carried and (noun := _coordinated_noun(tokens)):
            found.insert(0 if carried in COLOURS else len(found), (carried, noun))
        for w, noun in found:
            if all(a != w and n != noun for a, n in pairs):
                pairs.append((w, noun))
        carried = _coordinate_attribute(tokens) if stop.strip() == "," else ""
    return pairs


_DETERMINERS = {"a", "an", "the", "this", "that", "these", "those", "its", "their", "his", "her", "our", "your",
                "my", "some", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}


def _coordinate_attribute(tokens: list[str]) -> str:
    """The attribute right after a determiner that a phrase ends with ("a white" → "white"): the
    determiner is what says a noun is still to come, so "the car is red, green trees" carries nothing."""
    if len(tokens) >= 2 and tokens[-1] in ATTRIBUTES and tokens[-2] in _DETERMINERS:
        return tokens[-1]
    return ""


def _coordinated_noun(tokens: list[str]) -> str:
    """The noun a list of adjectives after a comma ends on: attributes we know are skipped, and one
    word we do not ("clean bathroom", "fluffy cat", "dark red fish"), as a determiner's comma promises
    an adjective before the noun."""
    j = 0 if tokens[:1] and tokens[0] in ATTRIBUTES else 1  # one unknown adjective first, at most
    while j < len(tokens) and tokens[j] in ATTRIBUTES:
        j += 1
    return _noun_at(tokens, j) if j < len(tokens) and _could_be_noun(tokens[j]) else ""


# Words after an attribute that are not the thing it describes ("the dark is large", "the their is green").
_NOT_NOUNS = {"their", "its", "his", "our", "your", "my", "another", "every", "some", "any", "all", "both",
              "dark", "bright", "pale", "deep", "very", "so", "too", "as", "than", "then", "while", "which",
              "that", "this", "these", "those", "is", "are", "was", "were", "be", "or", "but", "to", "at", "by",
              "for", "from", "into", "onto"}


def _could_be_noun(word: str) -> bool:
    return len(word) >= 2 and word not in STOP_NOUNS and word not in _FUNCTION_WORDS and word not in _NOT_NOUNS


def living_beings(plain: str) -> set[str]:
    """ "people" and/or "animals" when the image shows them; a people or animal word that only
    names a theme ("farmers market", "women's day", "cat café menu") does not count."""
    # One tokenisation for the whole text: asking per word re-tokenised it each time (quadratic).
    tokens = [(m.group(0), m.start()) for m in re.finditer(r"[A-Za-z][A-Za-z'-]*", plain)]
    found: set[str] = set()
    for i, (word, _) in enumerate(tokens):
        w = word.lower()
        if modifier_use(tokens, i):
            continue
        if w in PEOPLE or singular(w) in PEOPLE:
            found.add("people")
        elif singular(w) in ANIMALS:
            found.add("animals")
    return found
