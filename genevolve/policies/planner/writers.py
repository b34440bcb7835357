"""The prompt writers: the request restated, then one line per activated skill, as the brief.

``write_brief`` assembles the program's ``gen_prompt``; each ``SKILL_WRITERS`` entry turns a skill's
guidance into a concrete line for this request (the exact texts, the counts, the relations, the
attribute pairs, the beings, the materials, the style, the light), or "" when it has nothing to say.
"""

from __future__ import annotations

import re

from genevolve.english import attribute_pairs, living_beings, without_framing
from genevolve.policies.planner.routing import SKILL_PRIORITY, SKILL_TRIGGERS
from genevolve.program import (
    IMG_ID_RE,
    QUALITY_LINE,
    count_constraints,
    quoted_strings,
    relation_constraints,
    scrub_injected,
    strip_quoted,
    wanted_texts,
)


def write_brief(request: str, user_ids: list[str], chosen: list[tuple[str, str, str]], ordinal: dict,
                facts: list[str], skills: list[str]) -> str:
    """The gen_prompt: the request, the facts, one line per chosen reference, one per active skill.

    ``chosen`` holds (img_id, subject, note) per reference and ``ordinal`` maps an id to its
    ordinal word; the program cites references only by ordinal phrase.
    """
    parts: list[str] = [restate(request, user_ids, ordinal)]
    if facts:
        parts.append("Facts to respect: " + " ".join(facts))
    for img_id, subject, _ in chosen:
        the = "" if subject[:1].isupper() else "the "
        what = "the subject, look and identity" if subject == "your image" else f"the appearance of {the}{subject}"
        parts.append(f"Match {what} shown in the {ordinal[img_id]} reference image.")
    for skill in SKILL_PRIORITY:
        if skill in skills:
            line = SKILL_WRITERS[skill](request)
            if line:
                parts.append(line)
    parts.append(QUALITY_LINE)
    prompt = " ".join(p.strip() for p in parts if p.strip())
    return re.sub(r"\s{2,}", " ", prompt)


def restate(request: str, user_ids: list[str], ordinal: dict) -> str:
    """The request as the opening of the brief, without its framing, user IMG ids and URLs replaced."""
    # URLs, file paths and template tokens go (NFKC look-alikes too); quoted text to draw stays whole.
    text, _ = scrub_injected(without_framing(request), keep=quoted_strings(request))
    text = IMG_ID_RE.sub(lambda m: f"the {ordinal[m.group(0)]} reference image" if m.group(0) in ordinal
                         else "the reference", text)
    text = re.sub(r"\s{2,}", " ", text).strip()
    if text and not text.endswith((".", "!", "?")):
        text += "."
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------- one writer per skill

def _write_text(request: str) -> str:
    texts = wanted_texts(request)
    if not texts:
        return "Any lettering must be crisp, correctly spelled and legible."
    quoted = ", ".join(f'"{t}"' for t in texts)
    return (f"Render the text {quoted} exactly as written, letter for letter, each exactly once, in crisp "
            "legible lettering with strong contrast against its background; no other words anywhere.")


def _write_counts(request: str) -> str:
    counts = [c for c in count_constraints(request) if c.count]
    if not counts:
        return "Keep every counted object separate and countable; no extra copies."
    items = "; ".join(f"exactly {c.count} {c.subject}" for c in counts)
    return (f"Counts: {items}, each one fully visible and separated from the others, no duplicates, "
            "no partial or hidden extras.")


_RELATION_WORDS = {"left_of": "to the left of", "right_of": "to the right of", "in_front_of": "in front of",
                   "next_to": "next to"}


def _write_layout(request: str) -> str:
    rels = relation_constraints(request)
    arrangement = re.findall(r"\bin a (?:triangle|row|line|circle|grid|stack|pyramid|semicircle)\b",
                             strip_quoted(request), re.IGNORECASE)
    bits = [f"place {_the(_as_written(r.subject, request))} {_RELATION_WORDS.get(r.relation, r.relation)} "
            f"{_the(_as_written(r.object, request))}" for r in rels]
    bits += [f"objects arranged {a.lower()}" for a in arrangement]
    head = "Layout: " + "; ".join(bits) + ". " if bits else "Layout: "
    return head + ("Keep every object fully in frame with clear separation, consistent scale and "
                   "perspective, and unambiguous left/right and front/back placement.")


def _the(phrase: str) -> str:
    """"the cat" for "my cat", "a cat" or "cat": the renderer is told which object, not whose."""
    return "the " + re.sub(r"^(?:my|your|our|his|her|their|the|a|an)\s+", "", phrase, flags=re.IGNORECASE)


def _as_written(phrase: str, request: str) -> str:
    """A lower-cased phrase in the request's own capitalisation ("eiffel tower" -> "Eiffel Tower")."""
    m = re.search(re.escape(phrase), request, re.IGNORECASE)
    return m.group(0) if m else phrase


# Nouns ending in -s that are singular (or read that way), for the verb's number.
_SINGULAR_S = {"canvas", "lens", "news", "gas", "bus", "glass", "dress", "cactus", "iris", "chess", "class"}


def _be(noun: str) -> str:
    """"are" for a plural head noun ("the digits are cyan"), else "is" ("the door is red")."""
    from genevolve.subjects import singular

    head = noun.split()[-1].lower()
    return "are" if head not in _SINGULAR_S and singular(head) != head else "is"


def _write_attributes(request: str) -> str:
    pairs = attribute_pairs(strip_quoted(request))
    listing = ", ".join(f"the {n} {_be(n)} {a}" for a, n in pairs)
    return (f"Bind each attribute to its own object: {listing}; no colour or material bleeds from one "
            "object to another.")


def _write_anatomy(request: str) -> str:
    beings = living_beings(strip_quoted(request))
    people, animals = "people" in beings, "animals" in beings
    bits = []
    if people:
        bits.append("natural human proportions, five fingers per hand, symmetric eyes, believable poses "
                    "and expressions")
    if animals:
        bits.append("anatomically correct animals with the right number of legs, ears and tails and "
                    "natural fur or feather texture")
    return "Anatomy: " + "; ".join(bits) + "." if bits else ""


def _write_materials(request: str) -> str:
    found = sorted({m.group(0).lower() for m in
                    SKILL_TRIGGERS["physical_material_consistency"].finditer(strip_quoted(request))})
    head = f"Materials ({', '.join(found)}): " if found else "Materials: "
    return head + ("physically plausible surfaces; reflections and highlights agree with the light "
                   "sources, transparent things refract what is behind them, liquids have believable "
                   "surface tension and shadows fall consistently.")


def _write_creative(request: str) -> str:
    m = re.search(r"\b(?:in the style of|style of|styled as)\s+([^,.;]+)", strip_quoted(request), re.IGNORECASE)
    style = f" of {m.group(1).strip()}" if m else ""
    return (f"Apply the style{style} consistently to the whole image while the subject stays clearly "
            "recognisable; the surreal or imaginative idea is shown plainly and confidently, not hinted at.")


def _write_aesthetic(request: str) -> str:
    cues = sorted({m.group(0).lower() for m in SKILL_TRIGGERS["aesthetic_drawing"].finditer(strip_quoted(request))})
    head = f"Look ({', '.join(cues)}): " if cues else "Look: "
    return head + ("one coherent light direction, a deliberate focal point, balanced composition and a "
                   "colour palette that carries the mood.")


SKILL_WRITERS = {
    "text_rendering": _write_text,
    "quantity_counting": _write_counts,
    "spatial_layout": _write_layout,
    "attribute_binding": _write_attributes,
    "anatomy_body_coherence": _write_anatomy,
    "physical_material_consistency": _write_materials,
    "creative_drawing": _write_creative,
    "aesthetic_drawing": _write_aesthetic,
}
