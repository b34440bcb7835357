"""Skill routing: which of the eight generation skills a request calls for, and in which order.

Each skill has a trigger rule (quoted text, exact counts, several placed objects, attributes on
different objects, people or animals, materials, a style or surreal idea, light and camera).
``SKILL_PRIORITY`` orders the skills of the catalogue (``genevolve.protocol.SKILLS``) for
the planner: when more skills trigger than it asks for, the first ones win, and the brief's
skill lines follow the same order.
"""

from __future__ import annotations

import re

from genevolve.english import (
    COLOURS,
    SHAPES,
    attribute_pairs,
    countable_objects,
    extract_subjects,
    living_beings,
)
from genevolve.program import count_constraints, relation_constraints, strip_quoted, wanted_texts
from genevolve.subjects import extract_entities

# Per skill, in priority order: why the planner reads its guidance (the start of its think text).
SKILL_REASONS = {
    "text_rendering": "The request asks for exact text",
    "quantity_counting": "The request fixes exact counts",
    "spatial_layout": "Several objects have to be placed in a specific arrangement",
    "attribute_binding": "Different objects carry different attributes that must not swap",
    "anatomy_body_coherence": "There are people or animals whose bodies must look right",
    "physical_material_consistency": "Materials, reflections or liquids must behave physically",
    "creative_drawing": "The request wants a style transfer or a surreal idea",
    "aesthetic_drawing": "Light, camera and mood matter here",
}
SKILL_PRIORITY = tuple(SKILL_REASONS)  # the same names as the catalogue (tests/policies/test_planner.py checks)

SKILL_TRIGGERS = {
    "spatial_layout": re.compile(
        r"\b(?:in a (?:triangle|row|line|circle|grid|stack|pyramid|semicircle)|arranged|side by side|"
        r"foreground|background|in the (?:center|centre|middle|corner)|top (?:left|right)|bottom "
        r"(?:left|right)|between|stacked|around a|left|right|above|below|behind|in front of|on top of|"
        r"beneath|underneath|next to|beside)\b", re.IGNORECASE),
    "creative_drawing": re.compile(
        r"\b(?:surreal\w*|dreamlike|dream|fantasy|whimsical|impossible|in the style of|style of|styled as|"
        r"reimagin\w*|made (?:entirely )?of|melting|levitat\w*|escher|magritte|dal[ií]|van gogh|ukiyo-e|"
        r"cubis\w*|pop art|pixel art|claymation|origami|collage|psychedelic|steampunk|cyberpunk|"
        r"transformed into|as if|style transfer)\b", re.IGNORECASE),
    "aesthetic_drawing": re.compile(
        r"\b(?:lighting|lit|light|golden hour|blue hour|sunset|sunrise|dusk|dawn|neon|cinematic|camera|"
        r"lens|\d{2,3}\s?mm|bokeh|depth of field|aperture|close-up|closeup|wide-angle|wide angle|macro|"
        r"aerial|overhead|low[- ]angle|high[- ]angle|shot|mood|moody|atmospher\w*|serene|dramatic|"
        r"film grain|polaroid|studio|backlit|silhouette|chiaroscuro|soft focus|editorial)\b", re.IGNORECASE),
    "physical_material_consistency": re.compile(
        r"\b(?:glass|glossy|chrome|metal|metallic|steel|copper|brass|mirror\w*|reflect\w*|refract\w*|"
        r"transparent|translucent|water|liquid|pour\w*|splash\w*|wine|coffee|tea|juice|milk|honey|ice|wet|"
        r"rain|puddle|marble|porcelain|ceramic|velvet|silk|leather|smoke|steam|bubbles?|crystal|"
        r"droplets?|condensation|ocean|waves|gold|silver|rubber|plastic|wood|wooden|fabric|fluffy|furry|"
        r"fur|wool|woolen|woollen|knitted|cotton|denim|cardboard|paper|stone|concrete|brick|clay|"
        r"rusty|matte|shiny|polished)\b", re.IGNORECASE),
}
_TEXT_CUE_RE = re.compile(r"\b(?:says|saying|reads|reading|the words?|lettering|caption(?:ed)?|titled|"
                          r"headline|slogan|label(?:led|ed)? with)\b", re.IGNORECASE)
# Writing without quotation marks still has to be drawn: "a sign that says Deep Learning", "the
# letter A", "a logo", "a yin-yang symbol".
_WRITING_RE = re.compile(r"\b(?:says|saying|that reads?|written|writing|words?|letters?|lettering|text|sign|"
                         r"signs|logo|symbols?|emblem|caption|spell\w*|alphabet|digits?|typograph\w*|"
                         r"calligraph\w*|graffiti|inscri\w*|neon sign|license plate|banner|sticker|flag|"
                         r"t-shirt|latte art|printed|tattoo|stamp|badge|map|\$\d[\d,]*|with an? [\w -]{1,30} on it)"
                         r"(?!\w)", re.IGNORECASE)
# Amounts without an exact number still have to come out right: "several", "a pair of", "a family".
_QUANTITY_RE = re.compile(
    r"\b(?:(?:two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|dozens?|hundreds?|thousands?|\d+)"
    r"\s+[a-z]+|several|multiple|many|numerous|a few|a (?:pair|couple|dozen|bunch|group|pile|stack|row|"
    r"collection|crowd|flock|herd|pack|set|family|series) of|family|single|one|twins?|triplets|both|each|"
    r"scattered|\w+-piece)\b", re.IGNORECASE)
# An explicit relation between two things: layout matters even with only two objects.
_RELATION_RE = re.compile(
    r"\b(?:(?:to the )?(?:left|right) of|above|below|under|beneath|underneath|on top of|atop|"
    r"on (?:the )?(?:top|bottom|side|left|right) of|next to|beside|behind|in front of|near|inside)\b",
    re.IGNORECASE)


# A colour on a body part ("a grey beard") is part of a portrait, not an attribute to bind.
_BODY_PARTS = {"beard", "hair", "eyes", "eye", "skin", "lips", "moustache", "mustache", "nails", "cheeks"}


def route_skills(request: str) -> list[str]:
    """The skills a request calls for, in priority order (the trigger rules of the issue)."""
    plain = strip_quoted(request)
    routed: set[str] = set()
    if wanted_texts(request) or (_TEXT_CUE_RE.search(plain) and re.search(r"[\"“«「]", request)) \
            or _WRITING_RE.search(plain):
        routed.add("text_rendering")
    counts = count_constraints(request)
    if any(c.count and c.count >= 2 for c in counts) or re.search(r"\bexactly\b", plain, re.IGNORECASE) \
            or _QUANTITY_RE.search(plain):
        routed.add("quantity_counting")
    entities = extract_entities(request)
    objects = set(countable_objects(plain)) | set(extract_subjects(request, entities))
    several = len(objects) >= 2 or any(c.count and c.count >= 2 for c in counts)
    if relation_constraints(request) or _RELATION_RE.search(plain) \
            or (SKILL_TRIGGERS["spatial_layout"].search(plain) and several):
        routed.add("spatial_layout")
    if living_beings(plain):
        routed.add("anatomy_body_coherence")
    # Attributes on two objects must not swap; the colour or shape of the one subject ("a red bench",
    # "an oblong cucumber") must not drift either. A colour word inside a name ("Golden Gate") is no attribute.
    named = " ".join(entities).lower()
    own = [(a, n) for a, n in attribute_pairs(plain)
           if (a in COLOURS or a in SHAPES) and n not in _BODY_PARTS and f"{a} {n}" not in named]
    if len(attribute_pairs(plain)) >= 2 or own:
        routed.add("attribute_binding")
    for skill in ("creative_drawing", "aesthetic_drawing", "physical_material_consistency"):
        if SKILL_TRIGGERS[skill].search(plain):
            routed.add(skill)
    return [s for s in SKILL_PRIORITY if s in routed]
