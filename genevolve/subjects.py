"""What a request names: drawable subjects, named entities, dates meant to be printed, arrangements.

Pure text work on the standard library only, so the program module, the planner, the renderers
and the judges agree on one reading of a request without loading anything heavy.

The noun vocabulary comes from the Unicode names of pictographic characters (``unicodedata``):
"SUNFLOWER", "TEAPOT", "HOT AIR BALLOON"… are concrete things a picture can show, and the same
names let the layout renderer find a pictogram for them. Abstract or misleading names (LIGHT,
NOTE, MOOD, body parts that skill texts mention) are left out.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# Blocks of pictographic characters (Miscellaneous Symbols, Dingbats, the emoji planes).
_PICTOGRAPH_RANGES = ((0x2600, 0x27C0), (0x1F300, 0x1F650), (0x1F680, 0x1F700), (0x1F900, 0x1FB00))
# Name words that mark a symbol, a face or a variant rather than a thing.
_SYMBOLIC = {"SIGN", "SYMBOL", "ARROW", "SQUARED", "CIRCLED", "KEYCAP", "WITH", "FACE", "HAND", "FINGER",
             "BLACK", "WHITE", "MARK", "REGIONAL", "DINGBAT", "ORNAMENT", "NEGATIVE", "LEFT", "RIGHT", "UP",
             "DOWN", "BUTTON", "MODIFIER", "CHESS", "DIGIT", "SANS", "HEAVY", "LIGHT", "MEDIUM", "OUTLINED",
             "SHADOWED", "ROTATED", "PARENTHESIZED", "PLAYING", "DOMINO", "MAHJONG", "TILE", "SQUARE", "CIRCLE",
             "TRIANGLE", "BOX", "DIAMOND", "LOZENGE", "STROKE", "ELLIPSE", "PENTAGON", "OCTAGON", "TRIGRAM",
             "MONOGRAM", "ICON", "EMPTY", "NO", "CANCELLATION", "BALLOT", "ASTERISK", "SPOKED", "POINTED",
             "MOOD", "BUBBLE", "BUBBLES", "RAYS", "NODE", "INTERLACED"}
# Head nouns that read as words of a brief more often than as things to draw.
_NOT_SUBJECTS = {
    "light", "note", "notes", "page", "pages", "document", "screen", "mood", "label", "fire", "scales", "pick",
    "key", "ring", "seat", "bank", "cancer", "leo", "virgo", "libra", "aries", "gemini", "taurus", "pisces",
    "mercury", "earth", "opposition", "conjunction", "sextile", "quincunx", "eye", "eyes", "ear", "nose",
    "mouth", "tongue", "lips", "hole", "overlap", "compression", "minimize", "maximize", "cooking", "camping",
    "bowling", "haircut", "kiss", "wedding", "folder", "memo", "scroll", "cinema", "family", "desert",
    "fog", "foggy", "rain", "footprints", "ankh", "neuter", "pallas", "juno", "vesta", "chiron", "ceres",
    "saltire", "sparkle", "sparkles", "herb", "runner", "crown", "dress", "bomb", "pill", "poo", "ghost",
    "imp", "pistol", "seedling", "bug", "printer", "speaker", "battery", "radio", "television", "calendar",
    "clipboard", "ledger", "newspaper", "package", "camera", "frames", "film", "tickets", "ticket", "score",
    "cross", "sunrise", "sunset", "row", "rows", "side", "sides", "viewpoint", "image", "images", "photo",
    "picture", "reference", "layer", "layers", "time", "times", "part", "parts", "piece", "pieces", "kind",
    "grid", "triangle", "circle", "line", "column", "stack", "pyramid", "semicircle", "diagonal", "pattern",
}
# Words a request uses for things the Unicode names spell differently, and people/animals that
# have no single pictograph name. The value is the pictograph name (or None: a subject without one).
ALIASES: dict[str, str | None] = {
    "car": "AUTOMOBILE", "flower": "BLOSSOM", "tree": "DECIDUOUS TREE", "house": "HOUSE BUILDING",
    "home": "HOUSE BUILDING", "cup": "HOT BEVERAGE", "mug": "HOT BEVERAGE", "coffee": "HOT BEVERAGE",
    "tea": "TEACUP WITHOUT HANDLE", "apple": "RED APPLE", "star": "WHITE MEDIUM STAR", "moon": "CRESCENT MOON",
    "person": "STANDING PERSON", "people": "BUSTS IN SILHOUETTE", "man": "MAN", "woman": "WOMAN",
    "boy": "BOY", "girl": "GIRL", "child": "CHILD", "kid": "CHILD", "baby": "BABY", "ship": "SHIP",
    "boat": "SAILBOAT", "plane": "AIRPLANE", "aeroplane": "AIRPLANE", "bike": "BICYCLE", "bicycle": "BICYCLE",
    "mountain": "MOUNTAIN", "island": "DESERT ISLAND", "castle": "EUROPEAN CASTLE", "train": "STEAM LOCOMOTIVE",
    "bus": "BUS", "ball": "SOCCER BALL", "football": "SOCCER BALL", "pizza": "SLICE OF PIZZA",
    "bird": "BIRD", "fish": "FISH", "kitten": "CAT", "puppy": "DOG", "cake": "SHORTCAKE",
    "wine": "WINE GLASS", "beer": "BEER MUG", "cocktail": "COCKTAIL GLASS", "cheese": "CHEESE WEDGE",
    "ice cream": "ICE CREAM", "egg": "EGG", "book": "CLOSED BOOK", "lamp": "ELECTRIC LIGHT BULB",
    "bulb": "ELECTRIC LIGHT BULB", "phone": "MOBILE PHONE", "smartphone": "MOBILE PHONE", "laptop": "PERSONAL COMPUTER",
    "computer": "PERSONAL COMPUTER", "clock": "MANTELPIECE CLOCK", "watch": "WATCH", "hat": "TOP HAT",
    "shoe": "ATHLETIC SHOE", "sneaker": "ATHLETIC SHOE", "guitar": "GUITAR", "piano": "MUSICAL KEYBOARD",
    "drum": "DRUM WITH DRUMSTICKS", "cloud": "CLOUD", "sun": "BLACK SUN WITH RAYS", "umbrella": "UMBRELLA",
    "vase": "AMPHORA", "bottle": "BOTTLE WITH POPPING CORK", "jar": "JAR", "bowl": "BOWL WITH SPOON",
    "crate": "PACKAGE", "box": "PACKAGE", "bag": "SHOPPING BAGS", "leaf": "MAPLE LEAF", "pumpkin": "JACK-O-LANTERN",
    "snowman": "SNOWMAN WITHOUT SNOW", "dinosaur": "SAUROPOD", "robot": "ROBOT FACE", "alien": "EXTRATERRESTRIAL ALIEN",
    "glass": "TUMBLER GLASS", "hand": "RAISED HAND", "lantern": "IZAKAYA LANTERN", "dna": "DNA DOUBLE HELIX",
    "tent": "TENT", "candle": "CANDLE", "kite": "KITE", "lamp post": None,
    "farmer": "FARMER", "chef": "COOK", "astronaut": "ASTRONAUT", "doctor": "HEALTH WORKER",
    "backpacker": None, "tourist": None, "hiker": None, "dancer": "DANCER", "runner": "RUNNER",
    "surfer": "SURFER", "swimmer": "SWIMMER", "skier": "SKIER", "cyclist": "BICYCLIST",
}
# Person words (ALIASES keys without a single code point) that still count as drawable subjects.
_EXTRA_NOUNS = {"backpacker", "tourist", "hiker", "farmer", "chef", "astronaut", "doctor", "cyclist",
                "teacher", "student", "musician", "player", "nurse", "pilot", "scientist", "soldier",
                "knight", "king", "queen", "robot", "dinosaur", "lantern", "vase", "jar", "bowl", "crate",
                "chair", "table", "sofa", "lamp", "bench", "window", "door", "fence", "road", "river", "lake",
                "cube", "sphere", "cone", "pyramid", "block", "bottle", "glass", "plate", "candle", "kite",
                "lighthouse", "windmill", "tower", "bridge", "temple", "pagoda", "skyscraper", "statue",
                "fox", "deer", "wolf", "owl", "eagle", "parrot", "flamingo", "peacock", "swan", "hedgehog",
                "otter", "raccoon", "squirrel", "panda", "lion", "bear", "zebra", "giraffe", "kangaroo",
                "corgi", "husky", "retriever", "butterfly", "bee", "ladybug", "frog", "lizard", "shark",
                "crab", "duck", "hen", "goose", "donkey", "camel", "unicorn", "balloon", "sailboat"}
# Containers: "baskets of tomatoes" is tomatoes in baskets, not a third kind of thing.
CONTAINERS = {"basket", "bowl", "box", "crate", "jar", "bucket", "bag", "plate", "tray", "vase", "pot",
              "cup", "glass", "bottle", "pile", "heap", "stack", "bunch", "bouquet", "cart", "barrel", "sack"}

ARRANGEMENT_RE = re.compile(
    r"\b(?:in\s+a\s+(?P<shape>row|line|triangle|circle|ring|grid|stack|pyramid|semicircle|column|diagonal)"
    r"|(?P<side>side\s+by\s+side)|(?P<stacked>stacked))\b", re.IGNORECASE)
_ARRANGEMENT_NAMES = {"line": "row", "ring": "circle", "pyramid": "triangle", "semicircle": "circle",
                      "stack": "column", "stacked": "column", "side by side": "row"}

_MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|december|"
           "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec")
_WEEKDAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
CALENDAR_WORDS = set(_MONTHS.split("|")) | set(_WEEKDAYS.split("|"))
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_TIME = r"(?:[01]?\d|2[0-3])(?::[0-5]\d)?\s*(?:am|pm|a\.m\.|p\.m\.)"
DATE_RE = re.compile(
    rf"\b(?:(?:{_WEEKDAYS}),?\s+)?(?:(?:{_MONTHS})\.?\s+{_DAY}(?:,?\s+\d{{4}})?|{_DAY}\s+(?:of\s+)?(?:{_MONTHS})"
    rf"(?:,?\s+\d{{4}})?)(?:,?\s+(?:at\s+)?{_TIME})?\b"
    rf"|\b(?:{_WEEKDAYS})(?:,?\s+(?:at\s+)?{_TIME})?\b",
    re.IGNORECASE)
# A request for a printed piece: dates and times it names are meant to be read on it.
PRINTED_RE = re.compile(r"\b(?:poster|flyer|flier|leaflet|banner|invitation|invite|ticket|card|cover|sign|"
                        r"signboard|menu|ad|advert|advertisement|billboard|announcement|save the date|"
                        r"brochure|programme|program|placard|label|calendar)s?\b", re.IGNORECASE)


@dataclass(frozen=True)
class SubjectMention:
    """One drawable subject of a request: its name as written (lower case), how many, how arranged."""

    name: str
    count: int | None = None  # None: not stated ("baskets", "a few")
    arrangement: str | None = None  # row, column, triangle, circle, grid, diagonal
    container: str | None = None  # "tomatoes" in "baskets of tomatoes" -> container "baskets"


# ---------------------------------------------------------------- words

# Words for people and animals in a picture (``english.living_beings`` reads them in context).
PEOPLE = {"person", "people", "man", "men", "woman", "women", "child", "children", "kid", "kids", "boy",
          "boys", "girl", "girls", "baby", "babies", "lady", "ladies", "gentleman", "portrait", "face",
          "faces", "dancer", "dancers", "athlete", "chef", "worker", "farmer", "astronaut", "backpacker",
          "backpackers", "couple", "family", "crowd", "player", "players", "musician", "soldier", "doctor",
          "student", "students", "teacher", "king", "queen", "hand", "hands", "runner", "swimmer", "rider",
          "grandmother", "grandfather", "mother", "father", "friends", "hiker", "hikers", "surfer",
          "skateboarder", "knight", "warrior", "businessman", "businesswoman", "nurse", "pilot",
          "scientist", "ballerina", "violinist", "guitarist", "tourists", "tourist", "monk", "samurai"}
ANIMALS = {"cat", "dog", "horse", "bird", "fox", "lion", "tiger", "elephant", "giraffe", "bear", "rabbit",
           "owl", "eagle", "fish", "whale", "dolphin", "deer", "wolf", "monkey", "panda", "cow", "sheep",
           "goat", "duck", "penguin", "parrot", "kitten", "puppy", "butterfly", "zebra", "squirrel", "frog",
           "snake", "turtle", "koala", "kangaroo", "camel", "hen", "chicken", "corgi", "retriever", "husky",
           "hamster", "otter", "hedgehog", "octopus", "shark", "swan", "flamingo", "peacock", "raccoon",
           "dragon", "unicorn", "bee", "ladybug", "lizard", "mouse", "mice", "pig", "donkey", "crab"}


def singular(word: str) -> str:
    """A plain English singular, good enough to match nouns ("tomatoes" -> "tomato")."""
    w = word.lower()
    irregular = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
                 "geese": "goose", "teeth": "tooth", "sheep": "sheep", "fish": "fish", "deer": "deer",
                 "knives": "knife", "leaves": "leaf", "loaves": "loaf", "wolves": "wolf", "shelves": "shelf",
                 "glasses": "glass", "dice": "die", "oxen": "ox", "cacti": "cactus"}
    if w in irregular:
        return irregular[w]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith(("ches", "shes", "xes", "sses", "zzes", "oes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def is_plural(word: str) -> bool:
    return singular(word) != word.lower() or word.lower() in {"people", "sheep", "fish", "deer"}


@lru_cache(maxsize=1)
def pictograph_names() -> dict[str, str]:
    """Lower-case thing name -> the character whose Unicode name it is (e.g. "sunflower" -> 🌻)."""
    out: dict[str, str] = {}
    for lo, hi in _PICTOGRAPH_RANGES:
        for cp in range(lo, hi):
            name = unicodedata.name(chr(cp), "")
            if not name or len(name.split()) > 3 or _SYMBOLIC & set(name.split()):
                continue
            out.setdefault(name.lower(), chr(cp))
    return out


@lru_cache(maxsize=1)
def noun_vocabulary() -> frozenset[str]:
    """Singular nouns (and two-word names) that name a drawable thing."""
    words: set[str] = set(_EXTRA_NOUNS) | {k for k in ALIASES if k not in _NOT_SUBJECTS}
    for name in pictograph_names():
        parts = name.split()
        if len(parts) == 1 and parts[0] not in _NOT_SUBJECTS and "-" not in parts[0]:
            words.add(singular(parts[0]))  # "PANCAKES" is the name; requests say "pancake" too
        elif len(parts) == 2 and "of" not in parts and "and" not in parts:
            words.add(name)  # "palm tree", "hot dog", "ice cream"
    return frozenset(w for w in words if len(w) > 2)


# ---------------------------------------------------------------- dates and printed text

def wants_printed_text(request: str) -> bool:
    return bool(PRINTED_RE.search(strip_quoted(request)))


def date_phrases(request: str) -> list[str]:
    """Dates and times a printed piece names ("Saturday June 7", "July 14, 2025 at 7 pm"), as written.

    Only for posters, flyers, invitations and the like: a photo "in June" prints no date.
    """
    if not wants_printed_text(request):
        return []
    out: list[str] = []
    for m in DATE_RE.finditer(strip_quoted(request)):
        phrase = m.group(0).strip(" ,")
        if phrase.lower() in ("may", "march") or not re.search(r"\d", phrase) and " " not in phrase:
            # A bare weekday ("every Friday") or "may" is a word of the sentence, not a date to print.
            continue
        if phrase not in out:
            out.append(phrase)
    return out


def is_calendar_phrase(words: list[str]) -> bool:
    """ "Saturday June 7": only weekday/month names, numbers and ordinals — a date, not a name."""
    return bool(words) and all(w.lower().strip(".,") in CALENDAR_WORDS or re.fullmatch(r"\d{1,4}(?:st|nd|rd|th)?", w)
                               for w in words)


# ---------------------------------------------------------------- subjects

def subject_mentions(request: str, counts: dict[str, int] | None = None,
                     extra: list[str] = ()) -> list[SubjectMention]:
    """The drawable subjects a request names, in order of appearance.

    ``counts`` maps counted nouns (from the count constraints) to their numbers; ``extra`` adds
    nouns found otherwise (relation sides, named entities). A counted noun is a subject even
    outside the vocabulary ("three backpackers").
    """
    plain = strip_quoted(request)
    counts = {singular(k): v for k, v in (counts or {}).items()}
    vocab = noun_vocabulary()
    # Words inside a named thing belong to it: the "House" of "Sydney Opera House" is no house.
    extra = list(dict.fromkeys(extra))  # relation sides repeat; each name is looked for once
    taken = _covered_spans(plain, extra)
    tokens = [(m.group(0), m.start()) for m in re.finditer(r"\b[A-Za-z][A-Za-z'-]*", plain)
              if not _inside(taken, m.start())]
    found: list[tuple[int, str]] = []  # (position, name as written)
    i = 0
    while i < len(tokens):
        word, pos = tokens[i]
        low = word.lower()
        if i + 1 < len(tokens):
            two = f"{low} {tokens[i + 1][0].lower()}"
            two_s = f"{low} {singular(tokens[i + 1][0])}"
            if two in vocab or two_s in vocab:
                found.append((pos, two))
                i += 2
                continue
        if modifier_use(tokens, i):
            i += 1
            continue
        if (singular(low) in vocab or singular(low) in counts) and low not in _NOT_SUBJECTS \
                and singular(low) not in _NOT_SUBJECTS:
            found.append((pos, low))
        i += 1
    for name in extra:
        words = name.split()
        while words and len(words) > 1 and words[0].endswith("ing"):  # "holding purple umbrella"
            words = words[1:]
        name = " ".join(words)
        if not words or set(words) & _NOT_PHRASE_WORDS or any(w in _NOT_SUBJECTS for w in words[-1:]):
            continue  # "it after rain", "the first image": not a thing to draw
        m = re.search(re.escape(name), plain, re.IGNORECASE)
        found.append((m.start() if m else len(plain), name.lower()))
    found.sort()
    # An arrangement belongs to the subject named just before it ("five apples in a row").
    shapes: dict[int, str] = {}
    starts = [p for p, _ in found]
    for m in ARRANGEMENT_RE.finditer(plain):
        k = bisect.bisect_left(starts, m.start())
        if k:
            word = re.sub(r"\s+", " ", (m.group("shape") or m.group("side") or m.group("stacked")).lower())
            shapes[starts[k - 1]] = _ARRANGEMENT_NAMES.get(word, word)
    out: list[SubjectMention] = []
    seen: set[str] = set()
    for pos, name in found:
        key = _key(name)
        if key in seen or any(key in _key(n.name).split() or _key(n.name) in key.split() for n in out
                              if " " in n.name or " " in key):
            continue
        seen.add(key)
        count = counts.get(singular(name.split()[-1]))
        if count is None and not is_plural(name.split()[-1]) and re.search(
                rf"\b(?:a|an|one|the|single)\s+(?:[a-z-]+\s+){{0,2}}{re.escape(name)}\b", plain, re.IGNORECASE):
            count = 1
        shape = shapes.get(pos)
        out.append(SubjectMention(name=name, count=count, arrangement=shape if count is None or count > 1 else None))
        if len(out) == _MAX_SUBJECTS:  # the rest are never used; searching for them would cost a pass each
            break
    # Containers: "baskets of tomatoes" or "apples in a brown basket" -> the fruit inside the basket.
    names = {m.name for m in out}
    result = []
    for m in out:
        cont = re.search(rf"\b([a-z]+)\s+(?:of|with|full\s+of|filled\s+with)\s+(?:[a-z-]+\s+)?{re.escape(m.name)}\b",
                         plain, re.IGNORECASE) or re.search(
            rf"\b{re.escape(m.name)}\s+(?:(?:piled|heaped|sitting|resting|lying)\s+)?(?:in|inside)\s+(?:a|an|the|one)\s+"
            rf"(?:[a-z-]+\s+)?([a-z]+)\b", plain, re.IGNORECASE)
        if cont and singular(cont.group(1)) in CONTAINERS and cont.group(1).lower() in names:
            m = SubjectMention(m.name, m.count, m.arrangement, container=cont.group(1).lower())
        result.append(m)
    return result


_MAX_SUBJECTS = 8


def _covered_spans(text: str, names: list[str]) -> list[tuple[int, int]]:
    """Where ``names`` occur in ``text``, merged into sorted, disjoint (start, end) spans."""
    spans = sorted((m.start(), m.end()) for name in names if name
                   for m in re.finditer(re.escape(name), text, re.IGNORECASE))
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _inside(spans: list[tuple[int, int]], pos: int) -> bool:
    k = bisect.bisect_right(spans, (pos, float("inf")))
    return bool(k) and spans[k - 1][0] <= pos < spans[k - 1][1]


_NOT_PHRASE_WORDS = {"it", "them", "this", "that", "these", "those", "first", "second", "third", "after",
                     "before", "during", "while", "all", "each", "every"}

_MODIFIER_HEADS = {"market", "markets", "day", "club", "league", "union", "festival", "fair", "book", "books",
                   "menu", "museum", "rights", "association", "room", "store", "shop", "section", "magazine",
                   "clothing", "wear", "fashion", "team", "choir", "hospital", "school", "party", "night",
                   "hour", "week", "month", "season", "theme", "logo", "brand", "label", "print", "pattern",
                   "motif", "costume", "toy", "toys", "food", "show", "parade", "meetup", "race", "race"}


def modifier_use(tokens: list[tuple[str, int]], i: int) -> bool:
    """ "farmers market", "women's day", "cat café": the noun names the theme, not a thing to draw."""
    word = tokens[i][0].lower()
    nxt = tokens[i + 1][0].lower() if i + 1 < len(tokens) else ""
    return word.endswith(("'s", "s'")) or nxt in _MODIFIER_HEADS


def mentions_subject(name: str, text: str) -> bool:
    """Whether ``text`` still names the subject: its head noun, singular or plural ("tomato" ~ "tomatoes")."""
    words = name.split()
    if not words:
        return False
    head = singular(words[-1])
    stem = head[:-1] if len(head) > 4 else head
    return bool(re.search(rf"\b{re.escape(stem)}", text, re.IGNORECASE))


def _key(name: str) -> str:
    return " ".join(singular(w) for w in name.lower().split())


def same_subject(a: str, b: str) -> bool:
    """Whether two subject names mean the same thing ("sunflowers" ~ "sunflower", "the teapot" ~ "teapots")."""
    ka, kb = _key(_drop_articles(a)), _key(_drop_articles(b))
    return bool(ka) and (ka == kb or ka.split()[-1] == kb.split()[-1] and (len(ka.split()) == 1 or len(kb.split()) == 1))


def _drop_articles(s: str) -> str:
    return " ".join(w for w in s.split() if w.lower() not in {"a", "an", "the", "some", "its", "their"})


# Text in quotes: what the user wants written in the image, never a scene word to count or relate.
QUOTED_TEXT_RE = re.compile(
    r"\"([^\"\n]{1,200})\"|“([^”\n]{1,200})”|«([^»\n]{1,200})»|「([^」\n]{1,200})」"
    r"|(?:(?<=\s)|(?<=^)|(?<=[(\[:]))'([^'\n]{1,120}?)'(?=[\s.,;:!?)\]]|$)"
)


def strip_quoted(text: str, repl: str = " ") -> str:
    """``text`` with every quoted passage replaced by ``repl``.

    Counting or relating words inside a title ("TWO CITIES") are not scene constraints, and a
    quoted word is text to draw, not a subject.
    """
    return QUOTED_TEXT_RE.sub(repl, text)


# ---------------------------------------------------------------- named entities

# Words that start a sentence or a brief but are not part of a name (the planner uses them too).
LEADING_NON_NAMES = {
    "a", "an", "the", "create", "draw", "make", "generate", "show", "design", "render", "paint", "photo",
    "poster", "portrait", "illustration", "image", "picture", "please", "i", "we", "my", "our", "this",
    "in", "on", "at", "with", "for", "from", "one", "two", "three", "four", "five", "six", "seven", "eight",
    "nine", "ten", "exactly", "close-up", "closeup", "macro", "studio", "product", "shot", "cinematic",
    "vintage", "retro", "minimalist", "surreal", "realistic", "photorealistic", "watercolor", "watercolour",
    "oil", "digital", "an", "and", "or", "but", "then", "it", "its", "their", "top", "bottom", "left",
    "right", "front", "back", "style", "use", "using", "keep", "give", "add", "place", "put", "bold",
}
_NAME_CONNECTORS = {"of", "the", "de", "la", "le", "du", "von", "van", "da", "del", "di", "&", "and", "on"}


def extract_entities(request: str) -> list[str]:
    """Named things worth a fact search: runs of capitalised words, product names with numbers.

    Quoted text is excluded (it is text to draw, not a thing to look up); a capitalised word that
    only starts a sentence or a brief ("Poster of…", "Three…") is not a name, and a date
    ("Saturday June 7") is something to print, not something to look up.
    """
    text = strip_quoted(request, " | ")
    tokens = re.findall(r"[A-Za-z0-9][\w'’-]*|[^\w\s]", text)
    entities: list[str] = []
    run: list[str] = []
    sentence_start = True
    run_at_start = [False]  # a run that began a sentence needs two capitalised words ("Book cover…")

    def flush():
        # Lower-case connectors join a name ("Statue of Liberty") but never end or start one;
        # capitalised ones are part of it ("Van Gogh").
        while run and run[-1] in _NAME_CONNECTORS:
            run.pop()
        while run and (run[0].lower() in LEADING_NON_NAMES or run[0] in _NAME_CONNECTORS):
            run.pop(0)
        # Calendar words at either end of a run belong to a date ("Paris on Saturday" -> "Paris").
        while run and run[-1].lower() in CALENDAR_WORDS | {"on"} and not is_calendar_phrase(run):
            run.pop()
        if run and not (run_at_start[0] and len(run) == 1) and not is_calendar_phrase(run):
            name = " ".join(run)
            single = len(run) == 1
            if not (single and (_is_demonym(name) or name.lower() in CALENDAR_WORDS or len(name) < 3
                                or name.isdigit())) and name not in entities:
                entities.append(name)
        run.clear()

    for tok in tokens:
        if not re.match(r"[A-Za-z0-9]", tok):
            flush()
            sentence_start = tok in ".!?:;|"
            continue
        is_cap = tok[0].isupper() or (tok[0].islower() and any(c.isupper() for c in tok[1:]))
        if is_cap and sentence_start and tok.lower() in LEADING_NON_NAMES:
            is_cap = False
        if is_cap:
            if not run:
                run_at_start[0] = sentence_start
            run.append(tok)
        elif run and (tok.lower() in _NAME_CONNECTORS or (tok[0].isdigit() and len(tok) <= 5)):
            run.append(tok)
        else:
            flush()
        sentence_start = False
    flush()
    return entities


def _is_demonym(word: str) -> bool:
    return len(word) > 5 and word.lower().endswith(("ese", "ish", "ian"))
