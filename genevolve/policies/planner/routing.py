"""Skill routing: which of the eight generation skills a request calls for, and in which order.

Each skill has a trigger rule (quoted text, exact counts, several placed objects, attributes on
different objects, people or animals, materials, a style or surreal idea, light and camera).
``SKILL_PRIORITY`` orders the skills of the catalogue (``genevolve.tools.knowledge.SKILLS``) for
the planner: when more skills trigger than it asks for, the first ones win, and the brief's
skill lines follow the same order.
"""

from __future__ import annotations

import re

from genevolve.policies.planner.english import attribute_pairs, countable_objects, extract_subjects, living_beings
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
SKILL_PRIORITY = tuple(SKILL_REASONS)  # the same names as the catalogue (tests/test_planner.py checks)

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
                         r"calligraph\w*|graffiti|inscri\w*|neon sign|license plate|banner)\b", re.IGNORECASE)
# Amounts without an exact number still have to come out right: "several", "a pair of", "a family".
_QUANTITY_RE = re.compile(
    r"\b(?:(?:two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|dozens?|hundreds?|thousands?|\d+)"
    r"\s+[a-z]+|several|multiple|many|numerous|a few|a (?:pair|couple|dozen|bunch|group|pile|stack|row|"
    r"collection|crowd|flock|herd|pack|set|family) of|family|single|twins?|triplets|both|each)\b", re.IGNORECASE)
# An explicit relation between two things: layout matters even with only two objects.
_RELATION_RE = re.compile(
    r"\b(?:(?:to the )?(?:left|right) of|above|below|under|beneath|underneath|on top of|atop|"
    r"on (?:the )?(?:top|bottom|side|left|right) of|next to|beside|behind|in front of|near|inside)\b",
    re.IGNORECASE)
_SHAPE_OR_COLOUR_RE = re.compile(
    r"\b(?:oblong|teardrop|pentagonal|hexagonal|octagonal|spherical|cylindrical|conical|cubic|circular|"
    r"rectangular|oval|round|square|triangular|diamond-shaped|heart-shaped|star-shaped|crescent|"
    r"red|blue|green|yellow|orange|purple|pink|black|white|grey|gray|brown|gold|silver|teal|cyan|"
    r"magenta|violet|turquoise|beige|crimson|navy|emerald|scarlet|ivory|indigo)\s+[a-z]", re.IGNORECASE)


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
    subject_attribute = bool(_SHAPE_OR_COLOUR_RE.search(plain)) and not any(
        re.search(re.escape(e), plain, re.IGNORECASE) and _SHAPE_OR_COLOUR_RE.search(e) for e in entities)
    main = extract_subjects(request, entities)[:1]
    first_pair = attribute_pairs(plain)[:1]
    if len(attribute_pairs(plain)) >= 2 or (subject_attribute and first_pair and main
                                            and first_pair[0][1] in main[0].split()):
        routed.add("attribute_binding")
    for skill in ("creative_drawing", "aesthetic_drawing", "physical_material_consistency"):
        if SKILL_TRIGGERS[skill].search(plain):
            routed.add(skill)
    return [s for s in SKILL_PRIORITY if s in routed]
