"""Whether a fact or a reference image is about something the request names or plainly means.

A fact is only as relevant as its source: a sentence from the Golden Gate Bridge article does not
belong in a snooker request because both mention "the world". So the test looks at the source's
subject (a search result's title, an image's title and caption) and asks whether the request
names it:

* the request holds a run of the subject's content words, in order, covering at least two thirds
  of them ("Golden Gate" names "Golden Gate Bridge", "solar eclipse" names "Total solar eclipse");
* or the request holds one of the subject's distinctive name words — a capitalised word that is not
  an everyday English word ("Eiffel", "Einstein", "Vespa");
* or, for a subject that is an everyday thing ("Mechanical typewriter", "Espresso cup on a saucer"),
  the request holds its head noun ("typewriter", "cup").

An alias in parentheses counts as a subject of its own ("Elizabeth Tower (Big Ben)"). Precision and
recall of this test against hand labels: ``genevolve/bench/data/relevance_labels.jsonl`` and
docs/bench/programs.md.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

_STOP = set("""a an the and or of in on at to for with by from as is are its it this that into over under
de la le du des del di da den der van von y style shaped type kind""".split())
_TITLE_SUFFIX = re.compile(r"\s+[-|–·]\s+(?:wikipedia|britannica|wikimedia commons|[\w .]{1,30}\.(?:com|org|net))\s*$",
                           re.IGNORECASE)


def _singular(w: str) -> str:
    from genevolve.subjects import singular

    return singular(w)


_SPELLING = {"colour": "color", "grey": "gray", "centre": "center", "theatre": "theater", "harbour": "harbor",
             "jewellery": "jewelry", "aluminium": "aluminum", "tyre": "tire", "favourite": "favorite"}


def _tokens(text: str) -> list[str]:
    words = re.findall(r"[a-z0-9][a-z0-9'-]*", text.lower().replace("'s ", " "))
    return [_singular(_SPELLING.get(w, w)) for w in words if w not in _STOP]


@lru_cache(maxsize=1)
def _dictionary() -> frozenset[str]:
    """Words Webster's 2nd (the ``english-words`` package) spells in lower case: common words. Names
    ("Eiffel", "Sydney", "Einstein", "Wukong") are capitalised there or absent."""
    from english_words import get_english_words_set

    return frozenset(w for w in get_english_words_set(["web2"], lower=False, alpha=True) if w.islower())


@lru_cache(maxsize=1)
def _everyday_words() -> frozenset[str]:
    """Common English nouns and adjectives: capitalised, they still do not name one particular thing."""
    from genevolve.english import ANIMALS, ATTRIBUTES, PEOPLE, VISUAL_WORDS
    from genevolve.subjects import noun_vocabulary

    extra = {"great", "golden", "total", "solar", "mount", "new", "year", "day", "dead", "street", "square",
             "bridge", "tower", "house", "opera", "wall", "army", "stone", "mask", "bus", "camera", "series",
             "festival", "spring", "crossing", "statue", "the", "world", "city", "river", "lake", "park",
             "museum", "palace", "temple", "church", "cathedral", "castle", "island", "north", "south",
             "east", "west", "old", "king", "queen", "saint", "st", "national", "royal", "central", "big",
             "little", "grand", "upper", "lower", "high", "first", "second", "planet", "carnival", "fair",
             "parade", "market", "station", "airport", "harbour", "harbor", "bay", "beach", "garden", "gardens",
             "zoo", "stadium", "theatre", "theater", "hall", "library", "university", "school", "hospital",
             "restaurant", "hotel", "mosque", "shrine", "gate", "arch", "fountain", "series", "landing"}
    vocab = {w for w in noun_vocabulary() if " " not in w}
    british = set(_SPELLING) | {"colours", "metres", "centres"}
    return frozenset(vocab | PEOPLE | ANIMALS | ATTRIBUTES | VISUAL_WORDS | extra | british | _dictionary())


_VERBISH = re.compile(r"^[a-z]+(?:ing|ed|s)$")
_LINKERS = {"in", "on", "at", "with", "and", "or", "of", "from", "by", "as", "to", "for", "is", "was", "are",
            "has", "had", "who", "which", "that", "while", "during", "near", "under", "over", "beside", "above",
            "below", "behind", "beyond", "around", "through", "across", "into", "onto", "against", "between",
            "inside", "outside", "like", "than", "after", "before", "without", "within", "up", "down", "off",
            "out", "can", "could", "will", "would", "may", "might", "should", "must", "does", "did", "be",
            "looms", "rises", "but", "so", "where", "when"}


def used_as_name(request: str, word: str) -> bool:
    """Whether ``word`` stands as a name somewhere in ``request`` rather than as part of a longer name
    ("Sun Wukong") or as a modifier of a common noun ("a Fuji apple", "a Tesla car"): what follows it
    is punctuation, the end, a linking word or a verb form ("Einstein riding", "Tesla gave")."""
    for m in re.finditer(rf"\b{re.escape(word)}(?:'s)?\b", request, re.IGNORECASE):
        after = re.match(r"\s*([A-Za-z][\w'-]*)?", request[m.end():])
        nxt = after.group(1) if after else None
        if not nxt or not re.match(r"\s", request[m.end():m.end() + 1] or " ") or request[m.end():m.end() + 1] in ",.;:!?)":
            return True
        if nxt[0].isupper():
            if _singular(nxt.lower()) in _everyday_words() or nxt.lower() in _STOP:
                return True  # "Einstein Museum"? still the man; "Planet Earth" reads on
            continue  # "Sun Wukong": a longer name
        if nxt.lower() in _LINKERS or nxt.lower() in _STOP or _VERBISH.match(nxt.lower()):
            return True
    return False


def subject_names(title: str) -> list[str]:
    """The names a source is about: its title's head ("Eiffel Tower — History" -> "Eiffel Tower"),
    site suffixes dropped, and each alias in parentheses."""
    head = re.split(r"\s+[—–]\s+|\s+\|\s+", title.strip())[0]
    head = _TITLE_SUFFIX.sub("", head).strip()
    aliases = re.findall(r"\(([^)]+)\)", head)
    main = re.sub(r"\([^)]*\)", " ", head).strip(" -:")
    return [n for n in [main, *aliases] if n.strip()]


def _adjective(word: str) -> bool:
    from genevolve.english import ATTRIBUTES

    return word in ATTRIBUTES or bool(re.search(r"(?:al|ic|ous|ful|ive|ed|less|ish|able|ible|ern|ique|ary)$", word)) \
        or word in {"old", "new", "vintage", "antique", "instant", "classic", "modern", "young", "little", "big"}


def _contains_run(seq: list[str], run: list[str]) -> bool:
    n = len(run)
    return any(seq[i:i + n] == run for i in range(len(seq) - n + 1))


# Head nouns people drop when they name a structure: "the Golden Gate", "the Empire State".
DROPPABLE_HEADS = {"bridge", "tower", "building", "statue", "cathedral", "palace", "temple", "monument",
                   "texture", "silhouette", "pattern"}


def _forms(subject: str) -> list[list[str]]:
    """The word runs that name ``subject``: all of it; without a droppable head ("golden gate");
    the part before "of" when it is a name of its own ("great wall" for "Great Wall of China")."""
    # A picture's title says where or when after its name: "Golden Gate Bridge at dusk".
    subject = re.split(r"\s+(?:at|in|on|with|under|during|from|near|beside|behind)\s+", subject, maxsplit=1)[0]
    words = _tokens(subject)
    forms = [words]
    if len(words) > 1 and words[-1] in DROPPABLE_HEADS:
        forms.append(words[:-1])
    before_of = _tokens(re.split(r"\s+of\s+", subject, maxsplit=1)[0])
    if " of " in subject and len(before_of) > 1:
        forms.append(before_of)
    return [f for f in forms if f]


def names_subject(request: str, subject: str) -> bool:
    """Whether ``request`` names ``subject`` (one name, e.g. "Golden Gate Bridge") or plainly means it."""
    subject = re.split(r"\s+(?:at|in|on|with|under|during|from|near|beside|behind)\s+", subject, maxsplit=1)[0]
    words = _tokens(subject)
    if not words:
        return False
    req = _tokens(request)
    req_set = set(req)
    if any(_contains_run(req, form) for form in _forms(subject)):
        return True
    everyday = _everyday_words()
    raw = re.findall(r"[A-Za-z][A-Za-z'-]*", subject)
    before_of = re.findall(r"[A-Za-z][A-Za-z'-]*", re.split(r"\s+of\s+", subject, maxsplit=1)[0])
    proper = len(raw) > 1 and all(w[0].isupper() or w.lower() in _STOP for w in raw)
    # A name word alone ("Einstein", "Fuji", "Kahlo") names its subject when it ends the name: in
    # "Sydney Opera House" the word "Sydney" only says where, so "downtown Sydney" is no opera house.
    # Sentence-case titles ("Vespa scooter") have only a conventional first capital; everyday words
    # ("Golden", "Big") are never names.
    def is_name(i: int, w: str) -> bool:
        return (w[0].isupper() and (i > 0 or proper) and w.lower() not in _STOP
                and _singular(w.lower()) not in everyday and len(w) > 2)

    content = [(i, w) for i, w in enumerate(before_of) if w.lower() not in _STOP]
    trailing: set[str] = set()
    for i, w in reversed(content):
        if not is_name(i, w):
            break
        trailing.add(_singular(w.lower()))
    if any(t in req_set and used_as_name(request, t) for t in trailing):
        return True
    if proper or any(w[0].isupper() for w in raw[1:]):
        return False
    # An everyday thing ("Mechanical typewriter", "Espresso cup on a saucer"): its head noun, the last
    # word before a preposition, must be in the request.
    front = re.split(r"\s+(?:on|in|with|at|under|beside|from|of|for)\s+", subject, maxsplit=1)[0]
    phrase = _tokens(front.split(" the ")[-1])  # "Chelsea the cat": a pet's name, then what it is
    if not phrase or phrase[-1] not in req_set:
        return False
    # "Colour wheel" is no Buddhist wheel and "Espresso cup" no cup of oil: a noun that narrows the head
    # must be in the request too; an adjective ("Mechanical typewriter", "Red motorcycle") need not.
    return all(w in req_set or _adjective(w) for w in phrase[:-1])


_SUBJECT_VERBS = ("is", "are", "was", "were", "has", "have", "had", "orbits", "stands", "sits", "lies", "looks",
                  "appears", "rises", "shows", "wears", "holds")


def sentence_subject(sentence: str) -> str:
    """The name a sentence opens with when it is the sentence's subject ("Earth orbits…" -> "Earth",
    "Mars is rusty red" -> "Mars"), else "" ("Ferdinand Porsche and his team designed it": the
    sentence is about "it")."""
    sentence = re.sub(r"^[A-Z][^.:]{0,30}:\s+", "", sentence.strip())  # a "Facts to respect: " label
    m = re.match(r"^(?:The\s+)?((?:[A-Z][\w'-]*)(?:\s+(?:of\s+|de\s+)?[A-Z][\w'-]*){0,3}),?\s+(\w+)",
                 sentence.strip())
    if not m or m.group(1) in ("It", "Its", "They", "This", "These", "He", "She"):
        return ""
    return m.group(1) if m.group(2).lower() in _SUBJECT_VERBS else ""


def fact_about_request(request: str, title: str, sentence: str) -> bool:
    """A fact is relevant when its source is about something the request names, or when the
    sentence itself opens with such a name (a collection like "The Solar System" holds
    "Earth orbits at about 150 million km from the Sun")."""
    if title.strip() and about_request(request, title):
        return True
    subject = sentence_subject(sentence)
    return bool(subject) and names_subject(request, subject) and (
        " " in subject or used_as_name(request, subject))


def about_request(request: str, title: str, caption: str = "") -> bool:
    """Whether a source titled ``title`` is about something ``request`` names.

    The caption is not consulted for a name match: captions mention surroundings ("a tall tower in
    the distance") that are not what the picture is of.
    """
    del caption  # kept in the signature: callers pass what they have; the title decides
    return any(names_subject(request, name) for name in subject_names(title))


# Coat words a caption uses for a colour ("a ginger tabby cat"); "tabby" only joins the run.
_COAT_COLOURS = {"ginger": "orange", "tan": "brown", "blond": "yellow", "blonde": "yellow", "gray": "grey",
                 "golden": "yellow", "gold": "yellow"}
_COLOUR_RUN_WORDS = {"and", "tabby", "light", "dark", "bright", "pale", "deep"}


def _colour_map(text: str) -> dict[str, set[str]]:
    """Each noun of ``text`` with the colours the words right before it give it ("black and white
    cat" -> {cat: {black, white}}); several mentions pool. One pass over the text."""
    from genevolve.english import COLOURS, singular

    tokens = [t for t in re.split(r"[^A-Za-z]+", text.lower()) if t]  # "cat's" -> cat
    found: dict[str, set[str]] = {}
    for i, t in enumerate(tokens):
        j = i - 1
        while j >= 0 and i - j <= 5 and (tokens[j] in COLOURS or tokens[j] in _COAT_COLOURS
                                         or tokens[j] in _COLOUR_RUN_WORDS):
            c = _COAT_COLOURS.get(tokens[j], tokens[j])
            if c in COLOURS or c in _COAT_COLOURS.values():
                found.setdefault(singular(t), set()).add(c)
            j -= 1
    return found


# A colour given after the noun: "the bench is blue", "the cubes are painted red and white".
_COLOUR_WORDS = r"(?:red|blue|green|yellow|orange|purple|pink|black|white|gr[ae]y|brown|golden|gold|silver|teal|cyan|" \
    r"magenta|violet|turquoise|beige|crimson|navy|emerald|scarlet|ivory|indigo|ginger|tan|blonde?)"
_PREDICATE_COLOUR_RE = re.compile(
    rf"\b([a-z]+)\s+(?:is|are)\s+(?:(?:painted|coloured|colored|all|bright|light|dark|pale|deep)\s+)*"
    rf"({_COLOUR_WORDS}(?:\s+(?:and|or)\s+{_COLOUR_WORDS})*)\b")
# Shades counted as the colour a request names: "crimson" keeps "a red car".
_SHADES = {"crimson": "red", "scarlet": "red", "navy": "blue", "indigo": "blue", "violet": "purple",
           "ivory": "white", "gray": "grey", "golden": "yellow", "gold": "yellow", "emerald": "green"}
# What a program may colour without making up an object's colour: the picture as a whole ("a
# black-and-white photo" is a style) and its light and setting, which the request rarely names.
_NOT_OBJECTS = {"photo", "photograph", "image", "picture", "illustration", "painting", "render", "scene", "style",
                "palette", "tone", "tones", "shot", "light", "lighting", "background", "backdrop", "sky", "hour"}


def colours_given(text: str, *, reach: int = 0) -> dict[str, set[str]]:
    """Each noun of ``text`` with the colours it is given, before it ("a blue bench") or after it
    ("the bench is blue"), shades folded into the colour they are of. A comma or a full stop ends
    the phrase ("Materials (silver, velvet)" colours nothing); ``reach`` words of any kind may stand
    between a colour and its noun ("red fire trucks", "brown leather boots" with a reach of 2)."""
    from genevolve.english import COLOURS, singular

    found: dict[str, set[str]] = {}
    for phrase in re.split(r"[,;:.!?()\[\]\"“”]+", text.lower()):
        for noun, colours in _colour_map(phrase).items():
            found.setdefault(noun, set()).update(colours)
        if reach:
            words = re.findall(r"[a-z]+", phrase)
            for i, w in enumerate(words):
                if w in COLOURS or w in _COAT_COLOURS:
                    for noun in words[i + 1:i + 2 + reach]:
                        found.setdefault(singular(noun), set()).add(_COAT_COLOURS.get(w, w))
        for m in _PREDICATE_COLOUR_RE.finditer(phrase):
            found.setdefault(singular(m.group(1)), set()).update(re.findall(_COLOUR_WORDS, m.group(2)))
    return {noun: {_SHADES.get(c, c) for c in colours}
            for noun, colours in found.items()
            if noun not in COLOURS and noun not in _COAT_COLOURS and noun not in _COLOUR_RUN_WORDS}


def invented_colours(prompt: str, request: str, grounds: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Colours ``prompt`` gives to things the request names and never coloured so ("the bench is
    blue" on "a photo of a bench", "a crimson car" passes for "a red car"): the renderer would
    draw a colour nobody asked for. A colour that one of ``grounds`` gives the thing (a search
    result of the run, a bound reference's title or caption: ``colour_grounds``) is grounded, not
    invented; the request's quoted text is the user's own."""
    from genevolve.program import strip_quoted

    # The request and the research are read generously (a colour two words before the noun still
    # gives it), the program strictly: a doubt counts for the program.
    asked = colours_given(request, reach=2)
    from genevolve.english import COLOURS, attribute_pairs

    for colour, noun in attribute_pairs(request):  # and across a comma: "a white, clean bathroom"
        if colour in COLOURS:
            asked.setdefault(_singular(noun.split()[-1]), set()).add(_SHADES.get(colour, colour))
    for ground in grounds:
        for noun, colours in colours_given(ground, reach=2).items():
            asked.setdefault(noun, set()).update(colours)
    named = {_singular(w) for w in _words(request)}
    out = []
    for noun, colours in colours_given(strip_quoted(prompt)).items():
        if len(noun) < 3 or noun in _NOT_OBJECTS or noun in _STOP or noun not in named:
            continue
        extra = sorted(colours - asked.get(noun, set()))
        if extra:
            out.append(f"{' and '.join(extra)} {noun}")
    return out


def colour_conflicts(request: str, title: str, caption: str = "") -> list[str]:
    """The things the request colours that the picture shows in other colours only: a "Red motorcycle
    in a garage" for "a black motorcycle", a ginger cat for "a black and white cat". Such a reference
    tells the renderer the wrong colour, however on-topic it is."""
    asked, shown = _colour_map(request), _colour_map(f"{title}. {caption}")
    return sorted(noun for noun, colours in shown.items()
                  if len(noun) >= 3 and asked.get(noun) and not asked[noun] & colours)


def picture_matches(request: str, title: str, caption: str = "") -> bool:
    """Whether a picture may anchor the render of ``request``: it shows something the request names,
    in no colour the request contradicts (a red motorcycle would repaint "a black motorcycle"), and
    not only as the word that qualifies another ("a motorcycle helmet" asks for no motorcycle)."""
    if not about_request(request, title) or colour_conflicts(request, title, caption):
        return False
    if _tokens(title)[-1:] in (["texture"], ["pattern"]):
        return True  # a material: "a gravel driveway" shows gravel
    words = re.findall(r"[A-Za-z][\w'-]*", (subject_names(title) or [title])[0])
    if any(w[0].isupper() for w in words[1:] if w.lower() not in _STOP):
        return True  # a name: a picture of the Eiffel Tower serves "the Eiffel Tower light show" too
    said = [h for h in _picture_heads(title) if re.search(rf"\b{re.escape(h)}(?:s|es)?\b", request.lower())]
    return not said or not all(only_qualifies_a_noun(request, h) for h in said)


def _picture_heads(title: str) -> list[str]:
    """The nouns a picture's title shows: "Red motorcycle in a garage" -> motorcycle, "Chelsea the
    cat" -> cat, "Eiffel Tower at dusk" -> tower, "Horse silhouette" -> horse (a silhouette or
    texture of something is that thing)."""
    heads = []
    for name in subject_names(title):
        front = re.split(r"\s+(?:on|in|with|at|under|beside|from|of|for)\s+", name, maxsplit=1)[0]
        words = _tokens(front.split(" the ")[-1])
        if len(words) > 1 and words[-1] in ("silhouette", "texture", "pattern"):
            words = words[:-1]  # a picture of a horse's outline is a picture of a horse
        if words:
            heads.append(words[-1])
    return heads


# Words that may follow a noun without making it a modifier of the next one ("a cat sat", "a cat
# here", "a cat can"): verbs a dictionary cannot tell from nouns, adverbs, auxiliaries.
_AFTER_A_NOUN = set("""sat stood lay ran flew ate held wore took came went made saw sang swam slept fell rode drove
hung grew drew threw caught bit hid lit met read shot spun stole struck swung taught thought won wrote leapt knelt
dove sits stands lies can could will would should must may might does did do here there too only also now then
again alone together nearby away back once twice just even still very so not never always next right left top
bottom front side underneath beneath atop amid amidst among along alongside toward towards past upon via""".split())


def only_qualifies_a_noun(request: str, noun: str) -> bool:
    """Whether every mention of ``noun`` (singular) in ``request`` is the word that qualifies the noun
    after it: "a motorcycle helmet", "cat food", "a cat puppet" ask for a helmet, food and a puppet.
    A plural ("cats play"), a mention before punctuation, a verb, an adverb or an adjective after it
    ("a cat sitting", "a cat here", "a cat asleep") leave it a subject of its own."""
    from genevolve.english import COLOURS

    mentions = list(re.finditer(rf"\b{re.escape(noun)}(s|es)?\b(?:[ \t]+([a-z]+)\b)?", request.lower()))

    def qualifies(m: re.Match) -> bool:
        after = m.group(2)
        return bool(not m.group(1) and after and after in _dictionary() and after not in _LINKERS
                    and after not in _STOP and after not in _AFTER_A_NOUN and after not in COLOURS
                    and not _VERBISH.match(after) and not after.endswith("ly") and not _adjective(after))

    return bool(mentions) and all(qualifies(m) for m in mentions)


def result_about_request(request: str, title: str, passage: str, queries=()) -> bool:
    """A search result is relevant as a whole when its title names something the request names;
    a result without a title (some digests have none) when its passage names an entity of the
    request (the queries searched for, else the request's named entities)."""
    if title.strip():
        return about_request(request, title)
    if not queries:
        from genevolve.subjects import extract_entities

        queries = extract_entities(request)
    return any(names_subject(request, str(q)) and names_subject(passage, str(q)) for q in queries)


def sentence_relevant(request: str, title: str, passage: str, sentence: str, queries=()) -> bool:
    """One sentence of a result: relevant when the result is, or when the sentence opens with a name
    the request names (``fact_about_request``)."""
    if result_about_request(request, title, passage, queries):
        return True
    subject = sentence_subject(sentence)
    return bool(subject) and names_subject(request, subject) and (
        " " in subject or used_as_name(request, subject))


LABELS = Path(__file__).resolve().parent / "bench" / "data" / "relevance_labels.jsonl"


def label_scores(path: str | Path = LABELS) -> dict:
    """Precision and recall of ``fact_about_request`` (and of the title test alone) against the hand
    labels, per split ("dev": the rules were revised while reading these; "heldout": labelled after
    the rules were fixed; "references": (request, bound picture) pairs, scored with ``about_request``)."""
    import json

    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    out: dict = {}
    tests = {"title": lambda r: about_request(r["request"], r["source"]),
             "title+sentence": lambda r: fact_about_request(r["request"], r["source"], r["fact"])}
    for split in sorted({r["split"] for r in rows}):
        part = [r for r in rows if r["split"] == split]
        # "references" rows pair a request with a bound picture's title (no fact): the picture test.
        for name, test in ({"picture": tests["title"]} if split == "references" else tests).items():
            pred = [(test(r), bool(r["relevant"])) for r in part]
            tp = sum(p and y for p, y in pred)
            fp = sum(p and not y for p, y in pred)
            fn = sum(y and not p for p, y in pred)
            out[f"{split}/{name}"] = {"pairs": len(part), "relevant": tp + fn, "tp": tp, "fp": fp, "fn": fn,
                                      "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                                      "recall": round(tp / (tp + fn), 4) if tp + fn else None}
    return out


# ---------------------------------------------------------------- a program's facts and references

SHARED_RUN = 6  # words a gen_prompt sentence must share in a row with a search passage to count as carried


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def sentences(text: str) -> list[str]:
    """``text`` split after . ! ? and at line breaks (the unit a fact is carried in), as the answer
    step splits a gen_prompt: a "Facts to respect:" line after a tab must be the sentence it drops."""
    from genevolve.program import prompt_sentences

    return prompt_sentences(text)


def _runs(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def irrelevant_content(traj, request: str) -> dict:
    """What a trajectory's program carries that the request never names: facts and references."""
    program = traj.program
    facts = carried_facts(program.gen_prompt, request, search_sources(traj)) if program else []
    refs = bound_references(program, traj, request)
    return {"facts": [f for f in facts if not f["relevant"]], "references": [r for r in refs if not r["relevant"]]}


def search_sources(traj) -> list[tuple[str, str]]:
    """(title, passage) of every search result the trajectory received."""
    from genevolve.tools.search import digest_results

    out = []
    for s in traj.steps:
        if s.kind == "tool_call" and s.tool_name == "search" and s.tool_text:
            out += digest_results(s.tool_text)
    return out


def carried_facts(prompt: str, request: str, sources: list[tuple[str, str]]) -> list[dict]:
    """Sentences of ``prompt`` that came from a search result: ``{"fact", "sources", "relevant"}``.

    A sentence is carried when it shares a run of SHARED_RUN words with a result passage that the
    request itself does not contain; which policy wrote it does not matter."""
    request_runs = _runs(_words(request), SHARED_RUN)
    indexed = [(title, passage, _runs(_words(passage), SHARED_RUN)) for title, passage in sources]
    out = []
    for sentence in sentences(prompt):
        runs = _runs(_words(sentence), SHARED_RUN) - request_runs
        if not runs:
            continue
        matched = [(title, passage) for title, passage, passage_runs in indexed if runs & passage_runs]
        if matched:
            out.append({"fact": sentence, "sources": sorted({t for t, _ in matched}),
                        "relevant": any(sentence_relevant(request, t, p, sentence) for t, p in matched)})
    return out


FACTS_LABEL_RE = re.compile(r"(?i)\bfacts? to respect\s*:")


def unsupported_facts(prompt: str, request: str, sources: list[tuple[str, str]],
                      carried: list[dict] | None = None) -> list[str]:
    """Sentences of ``prompt`` presented as facts (the "Facts to respect:" label the teacher puts
    before what it carried from search) that no search result behind the trajectory holds: a
    student that learned the label writes "Facts to respect: The cat is a mammal, not reptile."
    with nothing searched. ``carried``: ``carried_facts`` of the same arguments, when the caller
    has it already (one pass over the search results instead of two)."""
    if carried is None:
        carried = carried_facts(prompt, request, sources)
    held = {f["fact"] for f in carried}
    return [s for s in sentences(prompt) if FACTS_LABEL_RE.search(s) and s not in held]


def bound_references(program, traj, request: str) -> list[dict]:
    """The program's references, each with whether its picture may anchor the render
    (``picture_matches``; a user's own image always may): ``{"img_id", "title",
    "source", "relevant"}``, and ``colour_conflicts`` when the picture's colours contradict the request's."""
    out = []
    for ref in program.reference_images if program else []:
        image = traj.image(ref.img_id) if hasattr(traj, "image") else None
        if image is None:
            out.append({"img_id": ref.img_id, "title": None, "relevant": False})
            continue
        conflicts = [] if image.source == "user" else colour_conflicts(request, image.title or "", image.caption or "")
        relevant = image.source == "user" or picture_matches(request, image.title or "", image.caption or "")
        out.append({"img_id": ref.img_id, "title": image.title, "source": image.source, "relevant": relevant,
                    **({"colour_conflicts": conflicts} if conflicts else {})})
    return out


def colour_grounds(traj, sources: list[tuple[str, str]], refs: list[dict]) -> list[str]:
    """The texts that may give a thing its colour besides the request: every search result the
    trajectory received and the title and caption of every picture the program binds."""
    bound = {r["img_id"] for r in refs}
    return ([f"{title}. {passage}" for title, passage in sources]
            + [f"{i.title or ''}. {i.caption or ''}" for i in traj.images if i.img_id in bound])


def embedding_gate_scores(path: str | Path = LABELS) -> dict:
    """The alternative we measured and did not adopt: cosine(request, source title + fact) with
    all-MiniLM-L6-v2, its threshold chosen on ``dev`` (best F1) and applied unchanged to ``heldout``."""
    import json

    import numpy as np

    from genevolve.embeddings import text_embedder

    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r["split"] in ("dev", "heldout")]
    embedder = text_embedder()
    req = embedder.encode([r["request"] for r in rows])
    src = embedder.encode([f"{subject_names(r['source'])[0]}. {r['fact']}" for r in rows])
    cos = np.sum(np.asarray(req) * np.asarray(src), axis=1)

    def score(split: str, threshold: float) -> dict:
        pred = [(c >= threshold, bool(r["relevant"])) for c, r in zip(cos, rows) if r["split"] == split]
        tp = sum(p and y for p, y in pred)
        fp = sum(p and not y for p, y in pred)
        fn = sum(y and not p for p, y in pred)
        return {"threshold": round(float(threshold), 3), "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                "recall": round(tp / (tp + fn), 4) if tp + fn else None,
                "f1": round(2 * tp / (2 * tp + fp + fn), 4) if tp else 0.0}

    best = max((score("dev", t) for t in np.arange(0.10, 0.80, 0.01)), key=lambda s: s["f1"])
    strict = min((s for s in (score("dev", t) for t in np.arange(0.10, 0.95, 0.01)) if s["precision"] == 1.0),
                 key=lambda s: s["threshold"], default=None)
    out = {"dev/best_f1": best, "heldout/best_f1": score("heldout", best["threshold"])}
    if strict:
        out["dev/precision_1"] = strict
        out["heldout/precision_1"] = score("heldout", strict["threshold"])
    return out
