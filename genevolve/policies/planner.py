"""The planner: a rule-based expert policy that needs no model.

It is the offline default and the teacher whose trajectories seed SFT, so every turn it writes
follows the protocol exactly (``<think>`` + one ``<tool_call>`` or ``<answer>``).

It is stateless: each call re-reads the conversation (request, past tool calls, tool responses,
runtime messages) and decides the next turn, so it works inside the agent loop, after a store
round-trip and inside a replay. The plan for a request is fixed and ordered:

1. ``search`` once for the named entities (a small capitalisation-based extractor),
2. ``image_search`` once per distinct subject (entities first, then counted/animate/related
   nouns, else the main noun phrase), skipped for what the user's own images already show,
3. ``query_knowledge`` for each routed skill (trigger rules below, at most ``max_skills``),
4. ``answer``: a program that applies the activated skills, carries the facts found and cites
   at most ``max_references`` references by ordinal phrase only.

A final-round message or a correction message makes it answer at once with what it has.
``sample(messages, n)`` returns ``n`` identical turns: the planner is deterministic on purpose,
so a group of planner rollouts is a reproducible baseline rather than noise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from genevolve.program import (
    IMG_ID_RE,
    ORDINAL_REF_RE,
    ORDINALS,
    URL_RE,
    Program,
    count_constraints,
    relation_constraints,
    repair_program,
    validate_program,
    wanted_texts,
)
from genevolve.subjects import LEADING_NON_NAMES, extract_entities, is_person_word_used_as_modifier
from genevolve.protocol import FINAL_ROUND_MESSAGE, format_answer, format_tool_call, parse_turn

SKILLS = ("text_rendering", "quantity_counting", "spatial_layout", "attribute_binding",
          "anatomy_body_coherence", "physical_material_consistency", "creative_drawing",
          "aesthetic_drawing")  # also the priority order when more skills trigger than we ask for

_USER_IMAGES_RE = re.compile(r"\n*The user provided reference images: (.*)\.\s*$", re.DOTALL)
_IMAGE_LINE_RE = re.compile(r"^\s*[-*]?\s*(IMG_\d{3,})\s*:\s*(.*)$", re.MULTILINE)
_CORRECTION_PREFIX = "Your last turn could not be used"

_PEOPLE = {"person", "people", "man", "men", "woman", "women", "child", "children", "kid", "kids", "boy",
           "boys", "girl", "girls", "baby", "babies", "lady", "ladies", "gentleman", "portrait", "face",
           "faces", "dancer", "dancers", "athlete", "chef", "worker", "farmer", "astronaut", "backpacker",
           "backpackers", "couple", "family", "crowd", "player", "players", "musician", "soldier", "doctor",
           "student", "students", "teacher", "king", "queen", "hand", "hands", "runner", "swimmer", "rider",
           "grandmother", "grandfather", "mother", "father", "friends", "hiker", "hikers", "surfer",
           "skateboarder", "knight", "warrior", "businessman", "businesswoman", "nurse", "pilot",
           "scientist", "ballerina", "violinist", "guitarist", "tourists", "tourist", "monk", "samurai"}
_ANIMALS = {"cat", "dog", "horse", "bird", "fox", "lion", "tiger", "elephant", "giraffe", "bear", "rabbit",
            "owl", "eagle", "fish", "whale", "dolphin", "deer", "wolf", "monkey", "panda", "cow", "sheep",
            "goat", "duck", "penguin", "parrot", "kitten", "puppy", "butterfly", "zebra", "squirrel", "frog",
            "snake", "turtle", "koala", "kangaroo", "camel", "hen", "chicken", "corgi", "retriever", "husky",
            "hamster", "otter", "hedgehog", "octopus", "shark", "swan", "flamingo", "peacock", "raccoon",
            "dragon", "unicorn", "bee", "ladybug", "lizard", "mouse", "mice", "pig", "donkey", "crab"}
_COLOURS = {"red", "blue", "green", "yellow", "orange", "purple", "pink", "black", "white", "grey", "gray",
            "brown", "golden", "silver", "teal", "cyan", "magenta", "violet", "turquoise", "beige", "crimson",
            "navy", "emerald", "scarlet", "ivory", "indigo"}
_ATTRIBUTES = _COLOURS | {"wooden", "glass", "metal", "metallic", "ceramic", "plastic", "paper", "stone",
                          "marble", "leather", "velvet", "striped", "spotted", "checkered", "fluffy", "tiny",
                          "huge", "small", "large", "tall", "round", "square", "triangular", "knitted",
                          "woolen", "rusty", "shiny", "matte", "transparent"}

_SKILL_TRIGGERS = {
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
        r"droplets?|condensation|ocean|waves|gold|silver)\b", re.IGNORECASE),
}
_TEXT_CUE_RE = re.compile(r"\b(?:says|saying|reads|reading|the words?|lettering|caption(?:ed)?|titled|"
                          r"headline|slogan|label(?:led|ed)? with)\b", re.IGNORECASE)

_SUBJECT_FRAMES = re.compile(
    r"\b(?:photo(?:graph)?|picture|image|poster|illustration|painting|render(?:ing)?|drawing|shot|"
    r"portrait|cover|ad|advertisement|still life|scene|sketch|view)\s+of\s+", re.IGNORECASE)
_SUBJECT_CUT = re.compile(r",|\.|;|:|\b(?:with|in|on|at|under|against|for|while|that|which|where|"
                          r"titled|reading|saying|beside|next|behind|above|below|left|right|"
                          r"arranged|and)\b", re.IGNORECASE)
_STOP_NOUNS = {"style", "image", "picture", "photo", "scene", "background", "foreground", "text", "title",
               "words", "lettering", "font", "light", "lighting", "colours", "colors", "mood", "shot",
               "composition", "detail", "details", "quality", "version", "view", "them", "it", "they",
               "each", "other", "him", "her", "one", "ones"}


@dataclass
class _State:
    """What the conversation so far tells the planner."""

    request: str
    user_ids: list[str]
    done_calls: list[tuple[str, dict]] = field(default_factory=list)
    responses: list[tuple[str, dict, str]] = field(default_factory=list)  # (tool, args, response text)
    must_answer: bool = False


class PlannerPolicy:
    """Rule-based expert policy; see the module docstring for the plan it follows."""

    name = "planner"

    def __init__(self, max_skills: int = 5, max_subjects: int = 3, max_entities: int = 3,
                 max_references: int = 2, search_top_k: int = 3, image_top_k: int = 3, **_ignored):
        self.max_skills = max_skills
        self.max_subjects = max_subjects
        self.max_entities = max_entities
        self.max_references = max_references
        self.search_top_k = search_top_k
        self.image_top_k = image_top_k

    # ------------------------------------------------------------------ policy interface

    def stream(self, messages: list[dict], images: Sequence = ()) -> Iterator[str]:
        turn = self.next_turn(messages, images)
        # Small chunks so the streaming path of the UI and the agent loop is exercised.
        for i in range(0, len(turn), 48):
            yield turn[i:i + 48]

    def sample(self, messages: list[dict], n: int) -> list[str]:
        """``n`` turns for a group rollout; identical, since the planner is deterministic."""
        turn = self.next_turn(messages)
        return [turn for _ in range(n)]

    def next_turn(self, messages: list[dict], images: Sequence = ()) -> str:
        state = _read_state(messages)
        if not state.must_answer:
            for name, args, think in self.plan(state.request, state.user_ids):
                if (name, args) not in state.done_calls:
                    return format_tool_call(name, args, think=think)
        program, think = self.write_program(state, images)
        return format_answer(program.to_official(), think=think)

    # ------------------------------------------------------------------ the plan

    def plan(self, request: str, user_ids: Sequence[str] = ()) -> list[tuple[str, dict, str]]:
        """The ordered tool calls for a request: (tool name, arguments, think text)."""
        steps: list[tuple[str, dict, str]] = []
        entities = extract_entities(request)[: self.max_entities]
        if entities:
            names = ", ".join(entities)
            them = "them" if len(entities) > 1 else "it"
            steps.append(("search", {"queries": entities, "top_k": self.search_top_k},
                          f"The request names {names}; the renderer cannot know how {them} really "
                          f"look{'s' if them == 'it' else ''}, so I look {them} up first."))
        budget = self.max_subjects if not user_ids else max(0, self.max_references - len(user_ids))
        subjects = extract_subjects(request, entities)
        if user_ids:
            # The user's images already show the generic subject; only named things need pictures.
            subjects = [s for s in subjects if s in entities]
        for subject in subjects[:budget]:
            steps.append(("image_search", {"query": subject, "top_k": self.image_top_k},
                          f"A picture of {subject} will anchor its appearance better than words."))
        for skill in route_skills(request)[: self.max_skills]:
            steps.append(("query_knowledge", {"skill_name": skill},
                          f"{_SKILL_REASONS[skill]} so I read the {skill} guidance."))
        return steps

    # ------------------------------------------------------------------ the answer

    def write_program(self, state: _State, images: Sequence = ()) -> tuple[Program, str]:
        request = state.request
        known = {*state.user_ids}
        candidates: list[tuple[str, str, str]] = []  # (img_id, subject, note) in order of preference
        for uid in state.user_ids:
            candidates.append((uid, "your image", "the user's own image: keep its subject, look and identity"))
        facts: list[str] = []
        skills: list[str] = []
        for name, args, text in state.responses:
            if name == "image_search":
                subject = str(args.get("query", ""))
                found = _parse_image_lines(text)
                known.update(i for i, _ in found)
                best = _best_image(subject, found)
                if best and best not in (c[0] for c in candidates):
                    candidates.append((best, subject, f"appearance of {subject}"))
            elif name == "search":
                facts += _facts_from(text, args.get("queries") or [])
            elif name == "query_knowledge" and "error" not in text[:40].lower():
                skills.append(str(args.get("skill_name")))
        chosen = candidates[: self.max_references]
        chosen.sort(key=lambda c: int(c[0].split("_")[1]))
        ordinal = {img_id: ORDINALS[i] for i, (img_id, _, _) in enumerate(chosen)}
        # Skills it read guide the brief; when forced to answer early, the routed ones still apply.
        active = skills or route_skills(request)[: self.max_skills]
        prompt = self._compose(request, state.user_ids, chosen, ordinal, facts, active)
        program = Program(gen_prompt=prompt,
                          reference_images=[{"img_id": i, "note": note} for i, _, note in chosen])
        if validate_program(program, known, self.max_references):
            program, _ = repair_program(program, known, self.max_references)
        n_refs = len(chosen)
        think = (f"I have what I need: {len(facts)} fact(s), {n_refs} reference image(s)"
                 f"{' and the ' + ', '.join(active) + ' guidance' if active else ''}. "
                 "Writing the program now.")
        if state.must_answer and not state.responses:
            think = "No more tool calls are allowed, so I answer from the request alone."
        return program, think

    def _compose(self, request: str, user_ids: list[str], chosen, ordinal: dict, facts: list[str],
                 skills: list[str]) -> str:
        parts: list[str] = [_restate(request, user_ids, ordinal)]
        if facts:
            parts.append("Facts to respect: " + " ".join(facts))
        for img_id, subject, _ in chosen:
            the = "" if subject[:1].isupper() else "the "
            what = "the subject, look and identity" if subject == "your image" else f"the appearance of {the}{subject}"
            parts.append(f"Match {what} shown in the {ordinal[img_id]} reference image.")
        for skill in SKILLS:
            if skill in skills:
                line = _SKILL_WRITERS[skill](request)
                if line:
                    parts.append(line)
        parts.append("High detail, coherent single image, no watermark, no stray text.")
        prompt = " ".join(p.strip() for p in parts if p.strip())
        return re.sub(r"\s{2,}", " ", prompt)


# ---------------------------------------------------------------- routing and extraction

def route_skills(request: str) -> list[str]:
    """The skills a request calls for, in priority order (the trigger rules of the issue)."""
    plain = _strip_quoted(request)
    routed: set[str] = set()
    if wanted_texts(request) or (_TEXT_CUE_RE.search(plain) and re.search(r"[\"“«「]", request)):
        routed.add("text_rendering")
    counts = count_constraints(request)
    if any(c.count and c.count >= 2 for c in counts) or re.search(r"\bexactly\b", plain, re.IGNORECASE):
        routed.add("quantity_counting")
    objects = set(_countable_objects(plain)) | set(extract_subjects(request, extract_entities(request)))
    several = len(objects) >= 2 or any(c.count and c.count >= 2 for c in counts)
    if relation_constraints(request) or (_SKILL_TRIGGERS["spatial_layout"].search(plain) and several):
        routed.add("spatial_layout")
    if _living_beings(plain):
        routed.add("anatomy_body_coherence")
    if len(_attribute_pairs(plain)) >= 2:
        routed.add("attribute_binding")
    for skill in ("creative_drawing", "aesthetic_drawing", "physical_material_consistency"):
        if _SKILL_TRIGGERS[skill].search(plain):
            routed.add(skill)
    return [s for s in SKILLS if s in routed]


def extract_subjects(request: str, entities: Sequence[str] = ()) -> list[str]:
    """Distinct visual subjects, one image search each: entities, then counted, animate and
    related nouns, else the main noun phrase of the request."""
    plain = _strip_quoted(request)
    out: list[str] = list(entities)
    covered = {_singular(w) for e in entities for w in e.split()}

    def add(noun: str):
        noun = noun.strip().lower()
        words = {_singular(w) for w in noun.split()}
        if not noun or noun in _STOP_NOUNS or words & covered:
            return
        out.append(noun)
        covered.update(words)

    for c in count_constraints(request):
        add(_singular(c.subject))
    for c in relation_constraints(request):
        for side in (c.subject, c.object):
            words = [w for w in side.split() if w not in _ATTRIBUTES]
            if words:
                add(_singular(words[-1]))
    for w in _words(plain):
        if _singular(w) in _ANIMALS:
            add(_singular(w))
    add(_main_subject(plain))
    return out


def _main_subject(plain: str) -> str:
    m = _SUBJECT_FRAMES.search(plain)
    rest = plain[m.end():] if m else plain
    rest = _SUBJECT_CUT.split(rest, maxsplit=1)[0]
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z'-]*", rest)
             if w.lower() not in LEADING_NON_NAMES and w.lower() not in {"of", "very", "highly"}]
    for i, w in enumerate(words[1:], start=1):  # "honey pouring onto…" -> "honey"
        if w.lower().endswith("ing"):
            words = words[:i]
            break
    return " ".join(words[:4]).lower()


def _countable_objects(plain: str) -> list[str]:
    nouns = [c.subject for c in count_constraints(plain)]
    nouns += [n for _, n in _attribute_pairs(plain)]
    return list(dict.fromkeys(nouns))


def _attribute_pairs(plain: str) -> list[tuple[str, str]]:
    """(attribute, noun) pairs such as ("red", "cube"), distinct by attribute and by noun."""
    words = _words(re.sub(r"\b(?:golden|blue) hour\b", " ", plain, flags=re.IGNORECASE))
    pairs: list[tuple[str, str]] = []
    for i, w in enumerate(words[:-1]):
        if w not in _ATTRIBUTES:
            continue
        j = i + 1
        while j < len(words) and words[j] in _ATTRIBUTES:
            j += 1
        if j < len(words) and words[j] not in _STOP_NOUNS and len(words[j]) > 2 \
                and words[j] not in {"and", "with", "the", "a", "an", "of", "in", "on"}:
            if all(a != w and n != words[j] for a, n in pairs):
                pairs.append((w, words[j]))
    return pairs


def _words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'-]*", text)]


def _singular(word: str) -> str:
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


def _strip_quoted(text: str, repl: str = " ") -> str:
    from genevolve.program import _QUOTE_RE

    return _QUOTE_RE.sub(repl, text)


# ---------------------------------------------------------------- reading the conversation

def _read_state(messages: list[dict]) -> _State:
    first_user = next((m for m in messages if m.get("role") == "user"), {"content": ""})
    content = str(first_user.get("content") or "")
    user_ids = [i for i in (first_user.get("images") or []) if isinstance(i, str)]
    m = _USER_IMAGES_RE.search(content)
    if m:
        if not user_ids:
            user_ids = IMG_ID_RE.findall(m.group(1))
        content = content[: m.start()]
    state = _State(request=content.strip(), user_ids=user_ids)
    last_call: tuple[str, dict] | None = None
    seen_first = False
    for msg in messages:
        role, text = msg.get("role"), str(msg.get("content") or "")
        if role == "assistant":
            turn = parse_turn(text)
            last_call = (turn.tool_call.name, turn.tool_call.arguments) if turn.kind == "tool_call" else None
            if last_call:
                state.done_calls.append(last_call)
        elif role == "user":
            if msg is first_user and not seen_first:
                seen_first = True
                continue
            if text.lstrip().startswith("<tool_response>") and last_call is not None:
                body = text.strip()[len("<tool_response>"):]
                body = body[: body.rfind("</tool_response>")] if "</tool_response>" in body else body
                state.responses.append((last_call[0], last_call[1], body.strip()))
                last_call = None
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    if last_user is not None and last_user is not first_user:
        text = str(last_user.get("content") or "")
        if text == FINAL_ROUND_MESSAGE or text.startswith(_CORRECTION_PREFIX):
            state.must_answer = True
    if any(m.get("role") == "user" and m.get("content") == FINAL_ROUND_MESSAGE for m in messages):
        state.must_answer = True
    return state


def _parse_image_lines(text: str) -> list[tuple[str, str]]:
    """``- IMG_004: <title> — <caption> (source: library, 512x512)`` → [(id, "title caption")]."""
    out = []
    for m in _IMAGE_LINE_RE.finditer(text):
        desc = re.sub(r"\(source:[^)]*\)\s*$", "", m.group(2)).strip()
        out.append((m.group(1), desc))
    return out


def _best_image(subject: str, found: list[tuple[str, str]]) -> str | None:
    """The retrieved image that really shows the subject, or None.

    A name ("Eiffel Tower") must appear whole in the title or caption; a generic noun must be in
    the title, or all its words in the caption. A caption that merely mentions "towers" is no
    picture of the Eiffel Tower.
    """
    want = [_singular(w) for w in _words(subject) if len(w) > 2]
    if not want:
        return None
    is_name = subject[:1].isupper() or any(c.isupper() for c in subject[1:])
    best, best_score = None, 0.0
    for img_id, desc in found:
        title, _, caption = desc.partition(" — ")
        in_title = {_singular(w) for w in _words(title)} & set(want)
        in_all = {_singular(w) for w in _words(desc)} & set(want)
        if is_name:
            ok = len(in_all) == len(set(want))
        else:
            ok = bool(in_title) or len(in_all) == len(set(want))
        score = 2 * len(in_title) + len(in_all)
        if ok and score > best_score:
            best, best_score = img_id, score
    return best


def _facts_from(text: str, queries: Sequence) -> list[str]:
    """Up to two clean sentences per queried entity from a search digest.

    Digest items look like ``1. **Title** — text… (source: …)``; headers, titles, sources and
    sentences cut off by the digest ("…") are dropped.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.endswith(":"):
            continue
        line = re.sub(r"^(?:[-*>]|\d+[.)])\s*", "", line)
        line = re.sub(r"^\*\*[^*]{1,120}\*\*\s*(?:[—–:-]\s*)?", "", line)  # the result's title
        line = re.sub(r"\((?:source|sources|url)\b[^)]*\)\s*$", "", line, flags=re.IGNORECASE)
        line = re.sub(r"‹/?\w+›", " ", URL_RE.sub("", line))
        line = re.sub(r"\*\*|__|`", "", line).strip()
        if re.match(r"(?i)^(?:source|sources|url|link)\b", line):
            continue
        sentences += [x.strip() for x in re.split(r"(?<=[.!?])\s+", line) if x.strip()]
    sentences = [x for x in sentences if not x.endswith(("…", "..."))]
    facts: list[str] = []
    for q in queries:
        keys = {w for w in _words(str(q)) if len(w) > 2}
        taken = 0
        # What a thing looks like helps the renderer more than its history: visual sentences first.
        for sentence in sorted(sentences, key=lambda x: -len(_VISUAL_WORDS & set(_words(x)))):
            clean = _clean_fact(sentence)
            if not clean or clean in facts or not keys & set(_words(clean)):
                continue
            facts.append(clean)
            taken += 1
            if taken == 2 or len(facts) >= 5:
                break
    return facts


_VISUAL_WORDS = _COLOURS | {
    "painted", "colour", "color", "coloured", "colored", "shape", "shaped", "tall", "wide", "curved",
    "legs", "arches", "lattice", "glass", "metal", "stone", "brick", "wood", "wooden", "steel", "iron",
    "titanium", "frame", "roof", "tower", "dome", "logo", "label", "script", "font", "stripes", "striped",
    "pattern", "texture", "surface", "floodlit", "lit", "glow", "made", "looks", "appearance", "height",
    "metres", "meters", "feet", "spire", "facade", "façade", "columns", "camera", "bump", "finish",
}


def _clean_fact(sentence: str) -> str:
    s = IMG_ID_RE.sub("", sentence)
    s = re.sub(r"[\"“”«»「」]", "", s)  # quotes would turn a fact into text to draw
    s = re.sub(r"(?<!\w)'|'(?!\w)", "", s)
    s = re.sub(r"\[[^\]]*\]|\([^)]*\)", "", s)  # citation marks and asides
    s = re.sub(r"\s{2,}", " ", s).strip(" -–—:")
    s = re.sub(r"^[^.:]{1,40}:\s+(?=[A-Z])", "", s)  # a digest's "Title: " label
    if ORDINAL_REF_RE.search(s) or len(s) < 20 or not re.search(r"[a-z]{3}", s):
        return ""
    if len(s) > 240:
        s = s[:240].rsplit(" ", 1)[0] + "…"
    if not s.endswith((".", "!", "?", "…")):
        s += "."
    return s


def _restate(request: str, user_ids: list[str], ordinal: dict) -> str:
    """The request as the opening of the brief, with user IMG ids and URLs replaced."""
    text = URL_RE.sub("", request.strip())
    text = IMG_ID_RE.sub(lambda m: f"the {ordinal[m.group(0)]} reference image" if m.group(0) in ordinal
                         else "the reference", text)
    text = re.sub(r"\s{2,}", " ", text).strip()
    if text and not text.endswith((".", "!", "?")):
        text += "."
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------- skill writers

_SKILL_REASONS = {
    "text_rendering": "The request asks for exact text",
    "quantity_counting": "The request fixes exact counts",
    "spatial_layout": "Several objects have to be placed in a specific arrangement",
    "attribute_binding": "Different objects carry different attributes that must not swap",
    "anatomy_body_coherence": "There are people or animals whose bodies must look right",
    "physical_material_consistency": "Materials, reflections or liquids must behave physically",
    "creative_drawing": "The request wants a style transfer or a surreal idea",
    "aesthetic_drawing": "Light, camera and mood matter here",
}


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


def _write_layout(request: str) -> str:
    rels = relation_constraints(request)
    arrangement = re.findall(r"\bin a (?:triangle|row|line|circle|grid|stack|pyramid|semicircle)\b",
                             _strip_quoted(request), re.IGNORECASE)
    bits = [f"place the {_as_written(r.subject, request)} {_RELATION_WORDS.get(r.relation, r.relation)} "
            f"the {_as_written(r.object, request)}" for r in rels]
    bits += [f"objects arranged {a.lower()}" for a in arrangement]
    head = "Layout: " + "; ".join(bits) + ". " if bits else "Layout: "
    return head + ("Keep every object fully in frame with clear separation, consistent scale and "
                   "perspective, and unambiguous left/right and front/back placement.")


_RELATION_WORDS = {"left_of": "to the left of", "right_of": "to the right of", "in_front_of": "in front of",
                   "next_to": "next to"}


def _as_written(phrase: str, request: str) -> str:
    """A lower-cased phrase in the request's own capitalisation ("eiffel tower" -> "Eiffel Tower")."""
    m = re.search(re.escape(phrase), request, re.IGNORECASE)
    return m.group(0) if m else phrase


def _write_attributes(request: str) -> str:
    pairs = _attribute_pairs(_strip_quoted(request))
    listing = ", ".join(f"the {n} is {a}" for a, n in pairs)
    return (f"Bind each attribute to its own object: {listing}; no colour or material bleeds from one "
            "object to another.")


def _living_beings(plain: str) -> set[str]:
    """ "people" and/or "animals" when the image shows them; a people or animal word that only
    names a theme ("farmers market", "women's day", "cat café menu") does not count."""
    tokens = list(re.finditer(r"[A-Za-z][A-Za-z'-]*", plain))
    found: set[str] = set()
    for i, m in enumerate(tokens):
        w = m.group(0).lower()
        if is_person_word_used_as_modifier(plain, i):
            continue
        if w in _PEOPLE or _singular(w) in _PEOPLE:
            found.add("people")
        elif _singular(w) in _ANIMALS:
            found.add("animals")
    return found


def _write_anatomy(request: str) -> str:
    beings = _living_beings(_strip_quoted(request))
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
                    _SKILL_TRIGGERS["physical_material_consistency"].finditer(_strip_quoted(request))})
    head = f"Materials ({', '.join(found)}): " if found else "Materials: "
    return head + ("physically plausible surfaces; reflections and highlights agree with the light "
                   "sources, transparent things refract what is behind them, liquids have believable "
                   "surface tension and shadows fall consistently.")


def _write_creative(request: str) -> str:
    m = re.search(r"\b(?:in the style of|style of|styled as)\s+([^,.;]+)", _strip_quoted(request), re.IGNORECASE)
    style = f" of {m.group(1).strip()}" if m else ""
    return (f"Apply the style{style} consistently to the whole image while the subject stays clearly "
            "recognisable; the surreal or imaginative idea is shown plainly and confidently, not hinted at.")


def _write_aesthetic(request: str) -> str:
    cues = sorted({m.group(0).lower() for m in _SKILL_TRIGGERS["aesthetic_drawing"].finditer(_strip_quoted(request))})
    head = f"Look ({', '.join(cues)}): " if cues else "Look: "
    return head + ("one coherent light direction, a deliberate focal point, balanced composition and a "
                   "colour palette that carries the mood.")


_SKILL_WRITERS = {
    "text_rendering": _write_text,
    "quantity_counting": _write_counts,
    "spatial_layout": _write_layout,
    "attribute_binding": _write_attributes,
    "anatomy_body_coherence": _write_anatomy,
    "physical_material_consistency": _write_materials,
    "creative_drawing": _write_creative,
    "aesthetic_drawing": _write_aesthetic,
}
