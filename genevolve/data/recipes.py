"""Seeded request recipes: templates x slots, written for this project, kept apart from the bench.

Each recipe is one natural image request the teacher will research and answer:
``{"id", "request", "images", "category", "track", "skills_expected"}``.

Subjects come from the offline corpus (one knowledge subject per topic document we know how to
phrase; unknown topics get generic phrasing) and from the image library (captions.json), so the
teacher's tools can actually find evidence and references for what we ask. Categories mirror the
two bench tracks. Recipe ``i`` depends only on ``(seed, i)``, so a larger ``--recipes N`` extends
a smaller run instead of reshuffling it, and the same seed always yields the same rows.

Train data must never contain the benchmark: every candidate is compared with the bench
questions (:func:`near_duplicate`) and regenerated when it comes too close, and a named entity
(a corpus subject) that any bench question names is never drawn at all.

Every recipe belongs to one of three splits (:data:`SPLITS`): ``sft`` (teacher trajectories to
imitate), ``rl`` (the GRPO prompt pool) and ``eval`` (held out for the ablation). Splits are
disjoint by request and by named entity: each entity belongs to one split for a seed
(:func:`entity_splits`), so a held-out request never names something the policy trained on.
"""

from __future__ import annotations

import difflib
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from genevolve.config import ASSETS, EXAMPLES

KNOWLEDGE = "knowledge"
QUALITY = "quality"

# Category names are the bench's, so the sufficiency judge routes skills the same way.
KNOWLEDGE_CATEGORIES = ("architecture_landmark", "street_view", "public_figure", "product", "vehicle",
                        "event", "science", "cultural_relic")
QUALITY_CATEGORIES = ("text_layout", "spatial_relation", "counting", "anatomy", "attribute_binding",
                      "material", "aesthetics", "creative_transformation")
CATEGORIES = KNOWLEDGE_CATEGORIES + QUALITY_CATEGORIES

# How we phrase the corpus topics we ship (file stem -> category, noun phrase). A corpus topic
# not listed here is still used, by its title, with the generic knowledge templates.
CORPUS_TOPICS = {
    "colosseum": ("architecture_landmark", "the Colosseum in Rome"),
    "eiffel_tower": ("architecture_landmark", "the Eiffel Tower"),
    "elizabeth_tower_big_ben": ("architecture_landmark", "Elizabeth Tower, the clock tower of Big Ben"),
    "golden_gate_bridge": ("architecture_landmark", "the Golden Gate Bridge"),
    "great_wall_of_china": ("architecture_landmark", "the Great Wall of China"),
    "machu_picchu": ("architecture_landmark", "the Inca citadel of Machu Picchu"),
    "mount_fuji": ("architecture_landmark", "Mount Fuji"),
    "statue_of_liberty": ("architecture_landmark", "the Statue of Liberty"),
    "sydney_opera_house": ("architecture_landmark", "the Sydney Opera House"),
    "taj_mahal": ("architecture_landmark", "the Taj Mahal"),
    "shibuya_crossing": ("street_view", "the Shibuya scramble crossing in Tokyo"),
    "times_square": ("street_view", "Times Square in New York"),
    "ada_lovelace": ("public_figure", "Ada Lovelace"),
    "albert_einstein": ("public_figure", "Albert Einstein"),
    "marie_curie": ("public_figure", "Marie Curie"),
    "apollo_11": ("event", "the Apollo 11 Moon landing"),
    "chinese_new_year": ("event", "a Chinese New Year celebration"),
    "holi": ("event", "the Holi festival of colours"),
    "fountain_pen": ("product", "a fountain pen"),
    "instant_camera": ("product", "an instant camera"),
    "moka_pot": ("product", "an aluminium moka pot"),
    "shinkansen_0_series": ("vehicle", "a Shinkansen 0 series bullet train"),
    "vespa_scooter": ("vehicle", "a vintage Vespa scooter"),
    "volkswagen_beetle": ("vehicle", "a classic Volkswagen Beetle"),
    "dna_double_helix": ("science", "the DNA double helix"),
    "photosynthesis": ("science", "photosynthesis"),
    "solar_system": ("science", "the Solar System"),
    "mona_lisa": ("cultural_relic", "the Mona Lisa"),
    "rosetta_stone": ("cultural_relic", "the Rosetta Stone"),
    "terracotta_army": ("cultural_relic", "the Terracotta Army"),
    "diwali": ("event", "the Diwali festival of lights"),
    "rio_carnival": ("event", "the Rio de Janeiro Carnival"),
    "day_of_the_dead": ("event", "the Day of the Dead celebrations in Mexico"),
    "oktoberfest": ("event", "Oktoberfest in Munich"),
    "total_solar_eclipse": ("science", "a total solar eclipse"),
    "water_cycle": ("science", "the water cycle"),
    "frida_kahlo": ("public_figure", "Frida Kahlo"),
    "nikola_tesla": ("public_figure", "Nikola Tesla"),
    "champs_elysees": ("street_view", "the Champs-Élysées in Paris"),
    "lombard_street": ("street_view", "Lombard Street in San Francisco"),
    "rotary_dial_telephone": ("product", "a rotary dial telephone"),
    "mechanical_typewriter": ("product", "a mechanical typewriter"),
    "routemaster_bus": ("vehicle", "a London double-decker Routemaster bus"),
    "checker_taxi_cab": ("vehicle", "a New York yellow Checker taxi cab"),
    "venus_de_milo": ("cultural_relic", "the Venus de Milo"),
    "tutankhamun_mask": ("cultural_relic", "Tutankhamun's golden death mask"),
}
# Design notes in the corpus, not subjects to draw.
_NOT_SUBJECTS = {"colour_palettes", "poster_typography", "print_formats"}

# Library images by the role they can play in a request (file name -> noun or role).
LIBRARY_SUBJECTS = {
    "chelsea_the_cat.jpg": "cat", "coffee_cup.jpg": "espresso cup", "rocket_falcon9_launch_pad.jpg": "rocket",
    "red_motorcycle.jpg": "motorcycle", "photographer_with_camera.jpg": "photographer",
    "horse_silhouette.png": "horse", "wall_clock_motion_blur.jpg": "wall clock",
    "astronaut_eileen_collins.jpg": "astronaut", "greek_coins_pompeii.jpg": "old coins",
}
LIBRARY_TEXTURES = {
    "brick_wall.jpg": "weathered brick", "grass.jpg": "dense grass", "gravel.jpg": "loose gravel",
    "kraft_paper_texture.jpg": "brown kraft paper", "paper_texture_cream.jpg": "cream parchment paper",
}
LIBRARY_MOODS = {
    "sunset_gradient_sky.jpg": "sunset sky", "pastel_dawn_sky.jpg": "pastel dawn sky",
    "night_sky_stars.jpg": "starry night sky", "color_wheel.png": "colour wheel",
}

# ---------------------------------------------------------------- slots

_VIEWS = ["seen from a rooftop café at blue hour", "on a foggy winter morning", "under a sky full of fireworks",
          "reflected in a rain puddle at street level", "framed by autumn leaves", "from a low angle at noon",
          "during a summer thunderstorm", "glimpsed through an arched window", "after a fresh snowfall"]
_ART_STYLES = ["as a 1950s linocut print", "photographed on medium-format film", "as a detailed pencil sketch",
               "in flat vector illustration style", "as a vintage railway poster", "as a loose watercolour",
               "as a glossy aerial photograph", "as a risograph print in two inks", "as a tilt-shift miniature photo"]
_POSTCARD_TEXT = ["WISH YOU WERE HERE", "BON VOYAGE", "SEE THE WORLD", "GRAND TOUR", "ON THE ROAD"]
_CROWD = ["a tourist couple taking a selfie", "a school group on a field trip", "a street painter at an easel",
          "a cyclist pausing for a photo", "an elderly man feeding pigeons"]
_STREET_TIMES = ["at six in the morning with almost nobody around", "on a humid summer afternoon",
                 "in heavy snowfall at dusk", "during a sudden downpour with umbrellas everywhere",
                 "seen from a second-floor window late at night"]
_CAMERAS = ["shot on a wide-angle lens", "as a grainy 1980s snapshot", "as a long-exposure photo with light trails",
            "as a crisp documentary photograph", "in a cinematic widescreen frame"]
_PERSON_SCENES = ["giving a lecture to a small audience", "walking along a river on a windy day",
                  "reading a letter by candlelight", "laughing with colleagues over tea",
                  "sketching ideas on a blackboard", "posing for a studio photograph"]
_PORTRAIT_STYLES = ["as a charcoal portrait", "as a period-accurate black-and-white photograph",
                    "as a museum oil portrait", "as a tinted engraving from an old encyclopedia",
                    "as a warm gouache illustration"]
_EVENT_STYLES = ["A children's-book illustration of {s}, bright and cheerful",
                 "A documentary photograph of {s} taken from above",
                 "{S} retold as a museum diorama with tiny hand-painted figures",
                 "A commemorative stamp showing {s}, with the word \"{t}\" along the edge",
                 "A wide cinematic still of {s}, {c}"]
_STAMP_TEXT = ["POSTAGE", "AIR MAIL", "FIRST DAY", "JUBILEE"]
_PRODUCTS = ["a glass jar of wildflower honey", "a bottle of cold-pressed olive oil", "a tin of loose-leaf green tea",
             "a bar of handmade lavender soap", "a can of sparkling lemon soda", "a box of dark chocolate truffles",
             "a bag of whole coffee beans", "a jar of spicy mango chutney"]
_PRODUCT_SETTINGS = ["on a marble countertop in soft studio light", "on a rustic wooden shelf",
                     "floating against a pastel backdrop", "beside fresh ingredients on a linen cloth",
                     "on a wet slate surface with water droplets", "in a sunlit shop window"]
_LABELS = ["NORTHWIND", "HONEY & THYME", "CASA BLU", "KITE & CO", "SOLSTICE", "MERIDIAN", "LITTLE OAK",
           "SALT & STONE", "GOLDEN HOUR", "PAPER MOON"]
_VEHICLE_SETTINGS = ["parked outside a seaside bakery", "crossing a mountain bridge in autumn",
                     "in a museum hall under spotlights", "on a rain-soaked city street at night",
                     "on a dusty country road at sunset", "in a tidy garage with tools on the wall"]
_SCIENCE_STYLES = ["a clean labelled diagram", "a hand-drawn chalkboard sketch", "a 3D cutaway render",
                   "an infographic with simple icons", "a vintage textbook plate"]
_AUDIENCES = ["a primary school classroom", "a museum wall panel", "a university lecture slide",
              "a science magazine spread"]
_SCIENCE_TITLES = ["HOW IT WORKS", "NATURE UP CLOSE", "SCIENCE CLUB", "LOOK CLOSER"]
_RELIC_SETTINGS = ["in a dim museum hall with a single spotlight", "on a velvet plinth behind polished glass",
                   "in a temporary exhibition with dark red walls", "in a crowded gallery on a rainy Saturday"]
_RELIC_STYLES = ["as a detailed archaeological field drawing", "photographed with raking light to show every groove",
                 "as a colourful educational poster for teenagers", "as a faded sepia museum catalogue photo"]
_GENERIC_KNOWLEDGE = ["An accurate illustration of {s}, {st}", "A museum-quality photograph of {s}, {v}",
                      "A magazine feature image about {s}, {st}"]

_SIGN_MEDIA = ["A bold gig poster", "A café window sign", "A vintage enamel shop sign", "A paperback book cover",
               "A neon sign above a bar door", "A hand-lettered wedding invitation", "A farmers' market banner",
               "A retro arcade flyer"]
_MAIN_TEXTS = ["OPEN LATE", "SUNDAY MARKET", "THE LAST TRAIN", "FRESH BREAD", "NIGHT OWLS", "GARDEN PARTY",
               "LUNAR CIRCUS", "SLOW MORNINGS"]
_SUB_TEXTS = ["SINCE 1987", "ALL WELCOME", "EST. 2004", "NO. 12", "VOL. 3", "FREE ENTRY"]
_FONTS = ["chunky slab-serif letters", "thin elegant script", "condensed sans-serif capitals",
          "hand-painted brush lettering", "glowing tube letters"]
_SIGN_DECOR = ["a small illustration of a bicycle beside it", "framed by a border of leaves",
               "on a deep teal background", "with a simple moon motif", "surrounded by hand-drawn stars"]

_NUMBERS = ["two", "three", "four", "five", "six", "seven"]
_COUNT_OBJECTS = ["teapots", "paper lanterns", "lemons", "candles", "origami cranes", "glass marbles",
                  "pine cones", "potted succulents", "wooden spoons", "snow globes", "red umbrellas"]
_COUNT_ADJ = ["identical", "small", "mismatched", "brightly painted", ""]
_ARRANGEMENTS = ["arranged in a triangle", "lined up in a single row", "placed in a circle",
                 "spaced evenly along a shelf", "grouped on a round tray"]
_COUNT_SCENES = ["on a linen tablecloth", "on a sunny windowsill", "against a plain grey wall",
                 "on a polished concrete floor", "in a shallow wooden crate"]

_SPATIAL_OBJECTS = ["ceramic vase", "stack of books", "potted fern", "desk lamp", "alarm clock", "teddy bear",
                    "backpack", "basket of apples", "guitar", "globe", "watering can", "birdcage"]
_RELATIONS = ["to the left of", "to the right of", "on top of", "underneath", "behind", "in front of", "next to"]
_SPATIAL_SCENES = ["in a cosy attic room", "on a sunny balcony", "in an empty white studio",
                   "in a child's bedroom", "on a cluttered workbench"]

_COLOURS = ["red", "blue", "green", "yellow", "orange", "purple", "pink", "white", "black", "teal", "brown"]
_BINDING_FRAMES = [
    "A child in a {c1} raincoat and {c2} boots holding a {c3} kite on a beach",
    "A {c1} bicycle with a {c2} basket leaning against a {c3} door",
    "A {c1} armchair with a {c2} cushion beside a {c3} bookshelf",
    "A {c1} car parked next to a {c2} van under a {c3} awning",
    "A cat with a {c1} collar sleeping on a {c2} blanket next to a {c3} ball of yarn",
    "A {c1} mug, a {c2} notebook and a {c3} pencil on a desk",
]

_MATERIAL_OBJECTS = ["chess knight", "teacup", "bicycle", "snail shell", "desk fan", "violin", "rocking horse",
                     "crown", "pair of headphones"]
_MATERIALS = ["polished copper", "frosted glass", "rough-hewn oak", "woven wicker", "brushed steel",
              "translucent jade", "wet clay", "crumpled aluminium foil", "carved ice"]
_MATERIAL_LIGHT = ["lit by a single window", "under hard midday sun", "in soft overcast light",
                   "on a black velvet background with a rim light"]

_PEOPLE = ["a rock climber", "a violinist", "a yoga teacher", "a toddler", "a juggler", "a sign-language interpreter",
           "a potter at the wheel", "a sprinter", "a gardener"]
_ACTIONS = {
    "a rock climber": "reaching for the next hold on a cliff", "a violinist": "playing on a dim stage",
    "a yoga teacher": "holding a tree pose on a pier", "a toddler": "taking first steps toward a parent",
    "a juggler": "keeping four balls in the air", "a sign-language interpreter": "signing at a conference",
    "a potter at the wheel": "shaping a tall vase", "a sprinter": "exploding out of the starting blocks",
    "a gardener": "kneeling to plant seedlings",
}
_ANATOMY_DETAILS = ["both hands clearly visible with five fingers each", "full body in frame with natural joint angles",
                    "feet planted naturally with correct proportions", "hands and wrists in sharp focus"]

_AESTHETIC_SCENES = ["a quiet reading nook by a rainy window", "a lavender field", "an empty tram station",
                     "a bowl of ramen on a wooden counter", "a greenhouse full of ferns",
                     "a lighthouse on a rocky shore",
                     "a market stall of ripe peaches", "a snowy mountain cabin"]
_LIGHT = ["at golden hour", "in cool blue twilight", "in soft diffused morning light", "under warm lantern light"]
_PALETTES = ["muted earth tones", "a restrained palette of teal and amber", "soft pastels",
             "deep jewel tones", "high-contrast black and cream"]
_COMPOSITIONS = ["rule-of-thirds composition", "symmetrical framing", "lots of negative space",
                 "a low vantage point with a strong leading line"]

_TRANSFORMS = ["a paper-cut diorama", "a stained-glass window", "a knitted wool toy", "a figure built from toy bricks",
               "a chrome sculpture in a gallery", "a botanical-style scientific illustration",
               "a character in a 16-bit video game", "an ice sculpture melting in the sun",
               "a tiny clay figurine", "an art-deco travel poster"]
_CREATIVE_SUBJECTS = ["a city skyline", "a sleeping fox", "a lighthouse", "an old steam locomotive",
                      "a bowl of fruit", "a hot-air balloon", "a grand piano", "a tortoise"]


SPLITS = ("sft", "rl", "eval")
# Requests with no named entity are split by id in these shares (the rest is sft).
EVAL_SHARE, RL_SHARE = 0.15, 0.15


@dataclass
class Recipe:
    id: str
    request: str
    images: list[str] = field(default_factory=list)
    category: str = ""
    track: str = QUALITY
    skills_expected: list[str] = field(default_factory=list)
    entity: str = ""  # the named corpus subject the request is about, "" for none
    split: str = "sft"  # sft | rl | eval
    variety: str = ""  # the genevolve.data.variety kind, "" for a template recipe

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Pools:
    """What the templates may draw from: corpus subjects and library images."""

    knowledge: dict[str, list[str]]  # category -> subject phrases
    generic_topics: list[str]  # corpus titles we have no phrasing for
    subjects: list[tuple[str, str]]  # (library path, noun)
    textures: list[tuple[str, str]]
    moods: list[tuple[str, str]]
    entity_names: dict[str, list[str]] = field(default_factory=dict)  # phrase -> lowercase names a text may use
    captions: dict[str, tuple[str, str]] = field(default_factory=dict)  # library path -> (title, caption)


def load_pools(corpus_dir: str | Path | None = None, library_dir: str | Path | None = None) -> Pools:
    corpus = Path(corpus_dir or EXAMPLES / "corpus")
    library = Path(library_dir or ASSETS / "library")
    knowledge: dict[str, list[str]] = {c: [] for c in KNOWLEDGE_CATEGORIES}
    generic: list[str] = []
    names: dict[str, list[str]] = {}
    for f in sorted(corpus.glob("*.md")):
        stem = f.stem.lower()
        if stem == "readme" or stem in _NOT_SUBJECTS:
            continue
        title = _first_heading(f)
        if stem in CORPUS_TOPICS:
            cat, phrase = CORPUS_TOPICS[stem]
            knowledge[cat].append(phrase)
        elif title:
            generic.append(title)
            phrase = title
        else:
            continue
        names[phrase] = _entity_names(phrase, stem, title)
    subjects, textures, moods, described = [], [], [], {}
    captions_file = library / "captions.json"
    captions = json.loads(captions_file.read_text(encoding="utf-8")) if captions_file.is_file() else {}
    for name in sorted(captions):
        path = library / name
        if not path.is_file():
            continue
        tags = [str(t).lower() for t in captions[name].get("tags") or []]
        described[str(path)] = (str(captions[name].get("title") or ""), str(captions[name].get("caption") or ""))
        if name in LIBRARY_SUBJECTS:
            subjects.append((str(path), LIBRARY_SUBJECTS[name]))
        elif name in LIBRARY_TEXTURES:
            textures.append((str(path), LIBRARY_TEXTURES[name]))
        elif name in LIBRARY_MOODS:
            moods.append((str(path), LIBRARY_MOODS[name]))
        elif "texture" in tags:
            textures.append((str(path), tags[0]))
        elif name not in _KNOWN_LIBRARY and tags:  # a user's own library: use its first tag as the subject
            subjects.append((str(path), tags[0]))
    return Pools(knowledge=knowledge, generic_topics=generic, subjects=subjects, textures=textures, moods=moods,
                 entity_names=names, captions=described)


def _entity_names(phrase: str, stem: str, title: str) -> list[str]:
    """The lowercase names a request or bench question may use for one corpus subject."""
    out = {re.sub(r"^(?:the|an?)\s+", "", phrase.lower()).split(",")[0].strip(), stem.replace("_", " ")}
    if title:
        out.add(re.sub(r"\s*\(.*?\)\s*", " ", title.lower()).strip())
        out.update(m.lower() for m in re.findall(r"\(([^)]+)\)", title))
    return sorted(n for n in out if len(n) > 3)


def names_entity(text: str, names: Iterable[str]) -> bool:
    low = " ".join(_WORD_RE.findall(text.lower()))
    return any(f" {' '.join(_WORD_RE.findall(n))} " in f" {low} " for n in names)


def entity_splits(pools: Pools, seed: int, questions: Iterable[str] = ()) -> dict[str, str]:
    """Named entity (subject phrase) -> split for ``seed``; an entity a bench question names -> "bench".

    Per category, entities in a seeded order go to eval, then rl, then sft, so each split sees
    every category that has enough entities (one: sft; two: eval and sft; three or more: all).
    """
    questions = list(questions)
    out: dict[str, str] = {}
    groups = [list(v) for v in pools.knowledge.values()] + [[t] for t in pools.generic_topics]
    for phrases in groups:
        free = []
        for phrase in phrases:
            if any(names_entity(q, pools.entity_names.get(phrase, [phrase])) for q in questions):
                out[phrase] = "bench"
            else:
                free.append(phrase)
        free.sort(key=lambda ph: random.Random(f"genevolve-entity-split:{seed}:{ph}").random())
        order = ["eval", "rl"] if len(free) >= 3 else ["eval"] if len(free) == 2 else []
        for i, phrase in enumerate(free):
            out[phrase] = order[i] if i < len(order) else "sft"
    # Generic topics are one entity each: spread them by the same shares as unnamed requests.
    for title in pools.generic_topics:
        if out.get(title) != "bench":
            out[title] = _share_split(random.Random(f"genevolve-entity-split:{seed}:{title}").random())
    return out


def _share_split(u: float) -> str:
    return "eval" if u < EVAL_SHARE else "rl" if u < EVAL_SHARE + RL_SHARE else "sft"


_KNOWN_LIBRARY = {"moon_surface.jpg", "hubble_deep_field.jpg", "retina_fundus.jpg", "tissue_microscopy_ihc.jpg",
                  "printed_page.jpg", "handwritten_notes.jpg"}


def _first_heading(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return ""


# ---------------------------------------------------------------- templates per category

def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _article(noun: str) -> str:
    """ "a cat", "an espresso cup", "old coins" (a plural takes none), "a stack of books" (the head
    noun, before "of", decides)."""
    head = noun.split(" of ")[0]
    if head.endswith("s") and not head.endswith("ss"):
        return noun
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _landmark(rng: random.Random, pools: Pools, subject: str) -> tuple[str, list[str]]:
    form = rng.randrange(3)
    if form == 0:
        return f"{_cap(subject)} {rng.choice(_VIEWS)}, {rng.choice(_ART_STYLES)}.", []
    if form == 1:
        return (f"A souvenir postcard of {subject} {rng.choice(_VIEWS)}, with \"{rng.choice(_POSTCARD_TEXT)}\" "
                "printed in the sky.", [])
    return f"{_cap(rng.choice(_CROWD))} with {subject} behind them, {rng.choice(_ART_STYLES)}.", []


def _street(rng, pools, subject):
    if rng.random() < 0.5:
        return f"{_cap(rng.choice(_CROWD))} in {subject} {rng.choice(_STREET_TIMES)}, {rng.choice(_CAMERAS)}.", []
    return f"{_cap(subject)} {rng.choice(_STREET_TIMES)}, {rng.choice(_CAMERAS)}.", []


def _person(rng, pools, subject):
    return f"{subject} {rng.choice(_PERSON_SCENES)}, {rng.choice(_PORTRAIT_STYLES)}.", []


def _event(rng, pools, subject):
    frame = rng.choice(_EVENT_STYLES)
    return frame.format(s=subject, S=_cap(subject), t=rng.choice(_STAMP_TEXT), c=rng.choice(_CAMERAS)) + ".", []


def _product(rng, pools, subject):
    # Exact label text is the point of this category: a knowledge product or an everyday one.
    item = subject if rng.random() < 0.5 else rng.choice(_PRODUCTS)
    return (f"Product photo of {item} {rng.choice(_PRODUCT_SETTINGS)}, its label reading "
            f"\"{rng.choice(_LABELS)}\" in clean lettering.", [])


def _vehicle(rng, pools, subject):
    return f"{_cap(subject)} {rng.choice(_VEHICLE_SETTINGS)}, {rng.choice(_ART_STYLES)}.", []


def _science(rng, pools, subject):
    text = f"{_cap(rng.choice(_SCIENCE_STYLES))} explaining {subject} for {rng.choice(_AUDIENCES)}"
    if rng.random() < 0.5:
        text += f", titled \"{rng.choice(_SCIENCE_TITLES)}\""
    return text + ".", []


def _relic(rng, pools, subject):
    if rng.random() < 0.5:
        return f"A close-up of {subject} {rng.choice(_RELIC_SETTINGS)}, {rng.choice(_RELIC_STYLES)}.", []
    return f"{_cap(rng.choice(_CROWD))} admiring {subject} {rng.choice(_RELIC_SETTINGS)}, {rng.choice(_CAMERAS)}.", []


def _generic_knowledge(rng, pools, subject):
    return rng.choice(_GENERIC_KNOWLEDGE).format(s=subject, st=rng.choice(_ART_STYLES), v=rng.choice(_VIEWS)) + ".", []


_KNOWLEDGE_TEMPLATES: dict[str, Callable] = {
    "architecture_landmark": _landmark, "street_view": _street, "public_figure": _person, "event": _event,
    "product": _product, "vehicle": _vehicle, "science": _science, "cultural_relic": _relic,
}


def _text_layout(rng, pools):
    main, sub = rng.choice(_MAIN_TEXTS), rng.choice(_SUB_TEXTS)
    return (f"{rng.choice(_SIGN_MEDIA)} that says \"{main}\" in {rng.choice(_FONTS)}, with \"{sub}\" in smaller "
            f"letters underneath, {rng.choice(_SIGN_DECOR)}.", [])


def _counting(rng, pools):
    adj = rng.choice(_COUNT_ADJ)
    obj = f"{adj} {rng.choice(_COUNT_OBJECTS)}".strip()
    return f"{_cap(rng.choice(_NUMBERS))} {obj} {rng.choice(_ARRANGEMENTS)} {rng.choice(_COUNT_SCENES)}.", []


def _spatial(rng, pools):
    if pools.subjects and rng.random() < 0.25:
        return _given_subject_placed(rng, pools)
    if pools.subjects and rng.random() < 0.45:
        return _named_subject_placed(rng, pools)
    a, b, c = rng.sample(_SPATIAL_OBJECTS, 3)
    r1, r2 = rng.sample(_RELATIONS, 2)
    text = f"A {a} {r1} a {b} {rng.choice(_SPATIAL_SCENES)}"
    if rng.random() < 0.5:
        text += f", and a {c} {r2} the {b}"
    return text + ".", []


def _attribute_binding(rng, pools):
    c1, c2, c3 = rng.sample(_COLOURS, 3)
    return rng.choice(_BINDING_FRAMES).format(c1=c1, c2=c2, c3=c3) + ".", []


def _material(rng, pools):
    obj = rng.choice(_MATERIAL_OBJECTS)
    if pools.textures and rng.random() < 0.3:
        return _given_texture(rng, pools, obj)
    return f"A {obj} made of {rng.choice(_MATERIALS)}, {rng.choice(_MATERIAL_LIGHT)}.", []


def _anatomy(rng, pools):
    person = rng.choice(_PEOPLE)
    return f"{_cap(person)} {_ACTIONS[person]}, {rng.choice(_ANATOMY_DETAILS)}.", []


def _aesthetics(rng, pools):
    scene = rng.choice(_AESTHETIC_SCENES)
    if pools.moods and rng.random() < 0.3:
        return _given_mood(rng, pools, scene)
    return (f"{_cap(scene)} {rng.choice(_LIGHT)}, {rng.choice(_PALETTES)}, {rng.choice(_COMPOSITIONS)}.", [])


def _creative(rng, pools):
    transform = rng.choice(_TRANSFORMS)
    if pools.subjects and rng.random() < 0.4:
        return _given_subject_reimagined(rng, pools, transform)
    if pools.subjects and rng.random() < 0.5:  # named, not given: found with image_search (see _spatial)
        return _named_subject_reimagined(rng, pools, transform)
    return f"{_cap(rng.choice(_CREATIVE_SUBJECTS))} reimagined as {transform}.", []


# Requests about a picture: one the user gives ("the first image"), or a library subject named with
# none given, which the teacher finds with image_search and binds. The templates above draw them
# now and then; ``picture_request`` draws only them (the RL pool's top-up, see generate_recipes).

def _given_subject_placed(rng, pools):
    path, noun = rng.choice(pools.subjects)
    obj = rng.choice(_SPATIAL_OBJECTS)
    return f"The {noun} from the first image placed {rng.choice(_RELATIONS)} a {obj} {rng.choice(_SPATIAL_SCENES)}.", [path]


def _named_subject_placed(rng, pools):
    # Without these, a student binds the user's pictures and never one it searched.
    _, noun = rng.choice(pools.subjects)
    return (f"{_cap(_article(noun))} {rng.choice(_RELATIONS)} {_article(rng.choice(_SPATIAL_OBJECTS))} "
            f"{rng.choice(_SPATIAL_SCENES)}.", [])


def _given_texture(rng, pools, obj):
    path, texture = rng.choice(pools.textures)
    return (f"A {obj} whose whole surface is covered in the {texture} texture of the first image, "
            f"{rng.choice(_MATERIAL_LIGHT)}.", [path])


def _given_mood(rng, pools, scene):
    path, mood = rng.choice(pools.moods)
    return f"{_cap(scene)}, borrowing the colours of the {mood} in the first image, {rng.choice(_COMPOSITIONS)}.", [path]


def _given_subject_reimagined(rng, pools, transform):
    path, noun = rng.choice(pools.subjects)
    return f"Reimagine the {noun} from the first image as {transform}, keeping its pose and colours.", [path]


def _named_subject_reimagined(rng, pools, transform):
    _, noun = rng.choice(pools.subjects)
    return f"{_cap(_article(noun))} reimagined as {transform}.", []


# Colours a request may ask a library subject in; a near miss takes one its picture contradicts.
_NEAR_MISS_COLOURS = ("black", "white", "blue", "green", "yellow", "purple", "pink", "silver", "orange", "grey")


def near_miss_request(rng: random.Random, pools: Pools) -> tuple[str, list[str], str]:
    """A library subject asked in a colour its picture contradicts ("a black motorcycle" when the
    library's motorcycle is red): the teacher's image_search shows the picture and it binds none.
    Beside ``picture_request``'s named subjects, which it binds, these make binding depend on what
    the reply shows, not on whether an id came back. ``(request, images, category)``; raises
    ValueError when no library caption gives a subject a colour to contradict."""
    from genevolve.relevance import colour_conflicts

    options = [(colour, noun) for path, noun in pools.subjects for colour in _NEAR_MISS_COLOURS
               if colour_conflicts(f"{_article(f'{colour} {noun}')}.", *pools.captions.get(path, ("", "")))]
    if not options:
        raise ValueError("no library caption gives a subject a colour that a request could contradict")
    colour, noun = rng.choice(options)
    return (f"{_cap(_article(f'{colour} {noun}'))} {rng.choice(_RELATIONS)} {_article(rng.choice(_SPATIAL_OBJECTS))} "
            f"{rng.choice(_SPATIAL_SCENES)}.", [], "spatial_relation")


def picture_request(rng: random.Random, pools: Pools, given: bool = True) -> tuple[str, list[str], str]:
    """A request about a picture, given or named: ``(request, images, category)``. ``given`` false:
    only a library subject named, none given."""
    named = [("spatial_relation", lambda: _named_subject_placed(rng, pools)),
             ("creative_transformation", lambda: _named_subject_reimagined(rng, pools, rng.choice(_TRANSFORMS)))]
    kinds = named
    if given:
        kinds = [("spatial_relation", lambda: _given_subject_placed(rng, pools)), named[0],
                 ("creative_transformation", lambda: _given_subject_reimagined(rng, pools, rng.choice(_TRANSFORMS))),
                 named[1]]
        if pools.textures:
            kinds.append(("material", lambda: _given_texture(rng, pools, rng.choice(_MATERIAL_OBJECTS))))
        if pools.moods:
            kinds.append(("aesthetics", lambda: _given_mood(rng, pools, rng.choice(_AESTHETIC_SCENES))))
    category, draw = rng.choice(kinds)
    request, images = draw()
    return request, images, category


_QUALITY_TEMPLATES: dict[str, Callable] = {
    "text_layout": _text_layout, "spatial_relation": _spatial, "counting": _counting, "anatomy": _anatomy,
    "attribute_binding": _attribute_binding, "material": _material, "aesthetics": _aesthetics,
    "creative_transformation": _creative,
}


# ---------------------------------------------------------------- bench disjointness

_WORD_RE = re.compile(r"[a-z0-9]+")
_FILLER = set("""a an the and or of in on at to for with by from as is are its it this that into over under
their his her one first image""".split())


def _norm(text: str) -> str:
    return " ".join(_WORD_RE.findall(text.lower()))


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD_RE.findall(text.lower()) if w not in _FILLER and len(w) > 1}


def similarity(a: str, b: str, floor: float = 0.0) -> float:
    """How close two requests are: the larger of word-sequence similarity (difflib on the word
    lists, so shared phrasing counts, not just shared vocabulary) and the overlap of their
    content words (Jaccard); 1.0 means the same request.

    With ``floor``, a sequence similarity that provably stays below it is not computed exactly
    (the cheap upper bound is returned instead), which keeps bench screening fast."""
    na, nb = _norm(a), _norm(b)
    if na == nb:
        return 1.0
    wa, wb = _content_words(a), _content_words(b)
    jac = len(wa & wb) / len(wa | wb) if wa | wb else 0.0
    matcher = difflib.SequenceMatcher(None, na.split(), nb.split(), autojunk=False)
    bound = matcher.quick_ratio()
    seq = bound if bound < floor else matcher.ratio()
    return max(seq, jac)


# Above this a request counts as a copy or paraphrase of a bench question. Our templates land
# well below it (< 0.6 on the mini bench); a bench question with punctuation changed lands near 1.
NEAR_DUPLICATE = 0.7


def near_duplicate(request: str, questions: Iterable[str], threshold: float = NEAR_DUPLICATE) -> str | None:
    """The first bench question ``request`` nearly equals, or None."""
    for q in questions:
        if similarity(request, q, floor=threshold) >= threshold:
            return q
    return None


def training_overlaps(train_requests: list[str], eval_cases: list[dict],
                      threshold: float | None = None) -> list[tuple[str, str]]:
    """(training request, eval id) pairs that are equal or near-duplicates (``similarity``).

    Only pairs that share a content word are compared exactly, so thousands against thousands
    stays quick.
    """
    threshold = NEAR_DUPLICATE if threshold is None else threshold
    by_word: dict[str, set[int]] = {}
    for i, c in enumerate(eval_cases):
        for w in _content_words(c["question"]):
            by_word.setdefault(w, set()).add(i)
    hits = []
    for req in train_requests:
        words = _content_words(req)
        shared: dict[int, int] = {}
        for w in words:
            for i in by_word.get(w, ()):
                shared[i] = shared.get(i, 0) + 1
        for i, n in shared.items():
            q = eval_cases[i]["question"]
            # Either similarity needs real overlap: skip pairs sharing under a third of the smaller word set.
            if n < 0.34 * min(len(words), len(_content_words(q)) or 1):
                continue
            if similarity(req, q, floor=threshold) >= threshold:
                hits.append((req, eval_cases[i]["id"]))
    return hits


def bench_questions(paths: Iterable[str | Path] | None = None) -> list[str]:
    """Questions of the benches train data must stay away from (default: the shipped mini bench)."""
    explicit = paths is not None
    files = [Path(p) for p in paths] if explicit else [EXAMPLES / "bench_mini" / "cases.jsonl"]
    out: list[str] = []
    for f in files:
        if not f.is_file():
            if explicit:  # a bench the caller named must be read, never silently skipped
                raise FileNotFoundError(f"bench file not found: {f}")
            continue
        text = f.read_text(encoding="utf-8")
        rows = json.loads(text) if f.suffix == ".json" else [json.loads(l) for l in text.splitlines() if l.strip()]
        for row in rows if isinstance(rows, list) else []:
            q = row.get("question") or row.get("prompt") if isinstance(row, dict) else row
            if isinstance(q, str) and q.strip():
                out.append(q)
    return out


# ---------------------------------------------------------------- the generator

def expected_skills(request: str, category: str, track: str) -> list[str]:
    """The skills the sufficiency judge will ask the teacher to have consulted."""
    from genevolve.judges.sufficiency import needed_skills
    from genevolve.program import derive_constraints

    return needed_skills({"category": category, "track": track}, derive_constraints(request))


def _category_for(index: int, seed: int, categories: tuple[str, ...]) -> str:
    # Each block of len(categories) recipes holds every category once, in a seeded order, so any
    # N covers the categories evenly and recipe i never depends on N.
    block, pos = divmod(index, len(categories))
    order = list(categories)
    random.Random(f"genevolve-recipes:{seed}:block:{block}").shuffle(order)
    return order[pos]


def generate_recipes(n: int, seed: int = 0, *, corpus_dir: str | Path | None = None,
                     library_dir: str | Path | None = None, avoid: Iterable[str] | None = None,
                     max_attempts: int = 50, held_out: bool = True, variety: float = 0.0,
                     rl_pictures: int = 0, sft_pictures: int = 0, sft_near_misses: int = 0) -> list[Recipe]:
    """``n`` recipes for ``seed``; requests are unique and none nearly equals a question in ``avoid``
    (default: the mini bench). ``variety``: share of recipes drawn from ``genevolve.data.variety``
    (dense paragraphs, other quote styles and wordings, merged constraints, invented subjects, plain
    scenes) instead of the templates; 0 gives template recipes only. ``rl_pictures``: that many more
    recipes after the ``n``, each about a picture (``picture_request``), all in the RL pool: the
    templates put few there, and GRPO on a pool that rarely asks for a picture unlearns binding one.
    ``sft_pictures``: that many SFT recipes after those, each naming a library subject with no picture
    given: the templates give the teacher about one such binding in sixty records, and a student
    trained on them binds a library picture it was shown less often than not. ``sft_near_misses``:
    that many SFT recipes after those, each asking a library subject in a colour its picture
    contradicts (``near_miss_request``), so the teacher is seen rejecting pictures that came back.
    The first ``n`` recipes (and the RL ones) are the same with or without them."""
    from genevolve.data.variety import variety_kind, variety_request

    pools = load_pools(corpus_dir, library_dir)
    questions = list(avoid) if avoid is not None else bench_questions()
    splits = entity_splits(pools, seed, questions)
    # A subject the bench names is never drawn: held-out scores must not rest on trained entities.
    pools.knowledge = {c: [p for p in v if splits.get(p) != "bench"] for c, v in pools.knowledge.items()}
    pools.generic_topics = [t for t in pools.generic_topics if splits.get(t) != "bench"]
    categories = tuple(c for c in KNOWLEDGE_CATEGORIES if pools.knowledge[c]) + QUALITY_CATEGORIES
    if pools.generic_topics:
        categories += ("general_knowledge",)
    seen: set[str] = set()
    recipes: list[Recipe] = []
    for i in range(n):
        category = _category_for(i, seed, categories)
        kind = variety_kind(seed, i, variety) if variety > 0 else None
        rng = random.Random(f"genevolve-recipes:{seed}:{i}")
        if kind is None:  # the track follows from the category, below
            def draw():
                return (*_draw(rng, pools, category), category, None)
        else:
            def draw():
                return variety_request(kind, rng, pools)
        request, images, category, track = _fresh(
            draw, seen, questions, max_attempts,
            f"could not draw a fresh {category} request for recipe {i} in {max_attempts} tries; "
            "the templates are exhausted for this N: use fewer recipes")
        if kind is None:
            track = QUALITY if category in QUALITY_CATEGORIES else KNOWLEDGE
        entity = "" if kind is not None else next(
            (ph for ph in (pools.knowledge.get(category) or pools.generic_topics)
             if names_entity(request, pools.entity_names.get(ph, [ph]))), "")
        split = splits[entity] if entity else _share_split(
            random.Random(f"genevolve-recipe-split:{seed}:{i}").random())
        if not held_out:  # every recipe is SFT data (entities still stay clear of the bench)
            split = "sft"
        recipes.append(Recipe(id=f"rec_{i:05d}", request=request, images=images, category=category, track=track,
                              skills_expected=expected_skills(request, category, track), entity=entity,
                              split=split, variety=kind or ""))
    extra = [("picture", True, "rl" if held_out else "sft", "--rl-pictures", j) for j in range(rl_pictures)]
    extra += [("sft-picture", False, "sft", "--sft-pictures", j) for j in range(sft_pictures)]
    extra += [("sft-near-miss", None, "sft", "--sft-near-misses", j) for j in range(sft_near_misses)]
    for name, given, split, option, j in extra:
        rng = random.Random(f"genevolve-recipes:{seed}:{name}:{j}")
        request, images, category = _fresh(
            lambda: near_miss_request(rng, pools) if given is None else picture_request(rng, pools, given=given),
            seen, questions, max_attempts,
            f"could not draw a fresh picture request for {option} recipe {j} in {max_attempts} tries; "
            f"use fewer {option}")
        recipes.append(Recipe(id=f"rec_{len(recipes):05d}", request=request, images=images, category=category,
                              track=QUALITY, skills_expected=expected_skills(request, category, QUALITY),
                              entity="", split=split, variety=""))
    return recipes


def _fresh(draw: Callable[[], tuple], seen: set[str], questions: list[str], max_attempts: int, failure: str) -> tuple:
    """``draw()`` again until its request (the first item) is new and not near a bench question;
    the request joins ``seen``. Raises ``failure`` after ``max_attempts`` tries."""
    for _attempt in range(max_attempts):
        drawn = draw()
        key = _norm(drawn[0])
        if key not in seen and near_duplicate(drawn[0], questions) is None:
            seen.add(key)
            return drawn
    raise RuntimeError(failure)


def _draw(rng: random.Random, pools: Pools, category: str) -> tuple[str, list[str]]:
    if category == "general_knowledge":
        return _generic_knowledge(rng, pools, rng.choice(pools.generic_topics))
    if category in _KNOWLEDGE_TEMPLATES:
        return _KNOWLEDGE_TEMPLATES[category](rng, pools, rng.choice(pools.knowledge[category]))
    return _QUALITY_TEMPLATES[category](rng, pools)
