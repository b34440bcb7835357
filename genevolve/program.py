"""The prompt-reference program: what the policy writes and every renderer executes.

The official answer JSON (what the released checkpoint emits) is
``{"gen_prompt": str, "reference_images": [{"img_id": "IMG_001", "note": str}]}``.
We add two things the model never has to write: resolved file paths for the references
(so a program file can be rendered on its own) and derived, verifiable ``constraints``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

# The quoting rule and the reading of a request's subjects live in ``subjects`` (stdlib only, a
# floor below); ``strip_quoted`` stays importable from here, where most callers look for it.
from genevolve.subjects import QUOTED_TEXT_RE, date_phrases, extract_entities, singular, strip_quoted, subject_mentions

IMG_ID_RE = re.compile(r"\bIMG_\d{3,}\b")
URL_RE = re.compile(r"(?:https?|ftp|file|data|javascript):[^\s\"')\]]+|\b[a-z][a-z0-9+.-]{1,15}://[^\s\"')\]]+"
                    r"|www\.[^\s\"')\]]+", re.IGNORECASE)
# A local file path: /etc/passwd, ./x/y, ~/x, C:\x (two parts at least, so "24/7" and "AC/DC" stay).
PATH_RE = re.compile(r"(?:(?<=[\s(\[=:,;])|^)(?:~|\.{1,2})?/(?:[\w.@-]+/)+[\w.@-]*|(?:(?<=\s)|^)~/[^\s\"']+"
                     r"|(?:(?<=\s)|^)[A-Za-z]:\\[^\s\"']+")
# Template tokens a downstream program might expand: {{x}}, {% x %}, ${x}, <|x|>.
TEMPLATE_RE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\$\{[^}\n]*\}|<\|[^|>\n]{1,40}\|>")
_INJECTED = (URL_RE, PATH_RE, TEMPLATE_RE)

ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
# The reference number an ordinal word names ("second" and "2nd" are 2).
ORDINAL_INDEX = {w: i + 1 for i, w in enumerate(ORDINALS)}
ORDINAL_INDEX.update({"1st": 1, "2nd": 2, "3rd": 3, "4th": 4, "5th": 5, "6th": 6, "7th": 7, "8th": 8})
ORDINAL_REF_RE = re.compile(
    r"\b(" + "|".join(list(ORDINAL_INDEX)) + r")\s+(?:reference\s+)?(?:image|photo|picture|reference)\b",
    re.IGNORECASE,
)

NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "a pair of": 2, "a couple of": 2,
    "a dozen": 12, "single": 1, "twin": 2, "both": 2,
}
# Words that follow a number but are measurements or ages, not countable subjects.
_NOT_COUNTABLE = {
    "years", "year", "minutes", "seconds", "hours", "days", "weeks", "months", "decades",
    "centuries", "times", "percent", "degrees", "meters", "metres", "feet", "inches", "miles",
    "km", "kg", "pounds", "dollars", "euros", "points", "pixels", "px", "k", "mm", "cm",
    "of", "and", "or", "to", "in", "on", "at", "by", "with", "the", "a", "an",
}
_IRREGULAR_PLURALS = {"people", "children", "men", "women", "mice", "geese", "teeth", "sheep",
                      "fish", "deer", "oxen", "cattle", "dice", "persons", "police"}
_PRONOUNS = {"it", "them", "him", "her", "this", "that", "these", "those", "they", "he", "she", "one"}
_ARTICLES = {"a", "an", "the", "its", "their", "his", "her", "this", "that", "some"}

RELATIONS = {
    "to the left of": "left_of", "on the left of": "left_of", "left of": "left_of",
    "to the right of": "right_of", "on the right of": "right_of", "right of": "right_of",
    "in front of": "in_front_of", "behind": "behind", "above": "above", "over": "above",
    "on top of": "above", "below": "below", "beneath": "below", "under": "below",
    "underneath": "below", "next to": "next_to", "beside": "next_to",
}
_REL_RE = re.compile(
    r"\b(" + "|".join(sorted((re.escape(k) for k in RELATIONS), key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class ProgramError(ValueError):
    """The answer JSON is not a usable program (e.g. no gen_prompt)."""


class Reference(BaseModel):
    img_id: str
    note: str = ""
    # Resolved by the runtime from the trajectory's image registry; not part of the official format.
    path: str | None = None


class Constraint(BaseModel):
    """A verifiable fact about the image, derived from the request and the program."""

    kind: Literal["text", "count", "relation", "subject"]
    text: str | None = None  # kind == "text": the exact string to appear
    subject: str | None = None  # count: the counted noun; relation: the first object; subject: its name
    count: int | None = None  # count; subject: how many (None when the request does not say)
    relation: str | None = None  # left_of, right_of, above, below, in_front_of, behind, next_to
    object: str | None = None  # relation: the second object; subject: its container ("baskets")
    arrangement: str | None = None  # subject: row, column, triangle, circle, grid, diagonal
    source: Literal["request", "program"] = "request"

    def describe(self) -> str:
        if self.kind == "text":
            return f'text "{self.text}" appears exactly'
        if self.kind == "count":
            return f"exactly {self.count} {self.subject}"
        if self.kind == "subject":
            how = f"{self.count} " if self.count else ""
            where = f" in a {self.arrangement}" if self.arrangement else ""
            inside = f" in the {self.object}" if self.object else ""
            return f"{how}{self.subject}{inside}{where} shown"
        return f"{self.subject} {self.relation.replace('_', ' ')} {self.object}"


class Program(BaseModel):
    gen_prompt: str
    reference_images: list[Reference] = Field(default_factory=list)
    constraints: list[Constraint] = Field(default_factory=list)

    @field_validator("gen_prompt")
    @classmethod
    def _renderable_text(cls, value: str) -> str:
        # Undecodable bytes from a command line arrive as lone surrogates, which no renderer,
        # tokenizer or UTF-8 file accepts; the program shows them as U+FFFD (the request
        # itself is stored losslessly).
        return _SURROGATE_RE.sub("\ufffd", value)

    @classmethod
    def from_answer(cls, data: Any) -> "Program":
        """Build from the model's answer JSON; raise ProgramError with a readable reason."""
        if not isinstance(data, dict):
            raise ProgramError("the answer must be a JSON object with gen_prompt and reference_images")
        prompt = data.get("gen_prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ProgramError("the answer has no non-empty string field 'gen_prompt'")
        refs = data.get("reference_images") or []
        if not isinstance(refs, list):
            raise ProgramError("'reference_images' must be a list of {img_id, note}")
        cleaned = []
        for ref in refs:
            if isinstance(ref, str):
                ref = {"img_id": ref}
            if not isinstance(ref, dict) or not isinstance(ref.get("img_id"), str):
                raise ProgramError("each reference needs a string 'img_id'")
            cleaned.append({"img_id": ref["img_id"].strip(), "note": str(ref.get("note") or "")})
        try:
            return cls(gen_prompt=prompt.strip(), reference_images=cleaned,
                       constraints=data.get("constraints") or [])
        except ValidationError as exc:
            raise ProgramError(f"invalid program: {exc.errors()[0].get('msg')}") from exc

    def to_official(self) -> dict:
        """The answer JSON exactly as the released checkpoint writes it."""
        return {
            "gen_prompt": self.gen_prompt,
            "reference_images": [{"img_id": r.img_id, "note": r.note} for r in self.reference_images],
        }

    def text_constraints(self) -> list[str]:
        return [c.text for c in self.constraints if c.kind == "text" and c.text]


class ProgramIssue(BaseModel):
    code: str
    message: str


def validate_program(program: Program, known_ids: set[str] | None = None,
                     max_references: int = 2) -> list[ProgramIssue]:
    """Everything wrong with a program, as a list (empty when valid)."""
    issues: list[ProgramIssue] = []
    ids = [r.img_id for r in program.reference_images]
    if known_ids is not None:
        for img_id in ids:
            if img_id not in known_ids:
                issues.append(ProgramIssue(code="unknown_id", message=f"{img_id} was never returned by a tool"))
    if len(set(ids)) != len(ids):
        issues.append(ProgramIssue(code="duplicate_id", message="a reference image is listed twice"))
    if ids != sorted(ids, key=id_number):
        issues.append(ProgramIssue(code="unsorted", message="reference_images must be sorted by img_id"))
    if len(ids) > max_references:
        issues.append(ProgramIssue(code="too_many", message=f"at most {max_references} reference images are allowed, got {len(ids)}"))
    if not has_content(program.gen_prompt):
        # "..." or "" describes nothing: the renderer would draw noise (an untuned model's favourite).
        issues.append(ProgramIssue(code="no_description",
                                   message="gen_prompt describes nothing; write the image to draw in words"))
    if IMG_ID_RE.search(program.gen_prompt):
        issues.append(ProgramIssue(code="id_leak", message="gen_prompt must not contain IMG_### ids; use 'the first reference image'"))
    if URL_RE.search(unicodedata.normalize("NFKC", strip_quoted(program.gen_prompt))):
        # Quoted text is text to draw (the user's own); agent.scrub_program checks it against the request.
        issues.append(ProgramIssue(code="url_leak", message="gen_prompt must not contain URLs"))
    for m in ORDINAL_REF_RE.finditer(program.gen_prompt):
        n = ORDINAL_INDEX[m.group(1).lower()]
        if n > len(ids):
            issues.append(ProgramIssue(code="ordinal_out_of_range",
                                       message=f"'{m.group(0)}' but only {len(ids)} reference image(s) are given"))
    return issues


# The repair note of a program whose description was replaced by the request: the eval counts such
# a program as not valid (the policy wrote nothing usable), the renderer still draws what was asked.
NO_DESCRIPTION_REPAIR = "gen_prompt described nothing; the request stands in for it"


def repair_program(program: Program, known_ids: set[str] | None, max_references: int = 2,
                   request: str = "") -> tuple[Program, list[str]]:
    """Make a program valid by the least change; returns the program and what was changed."""
    notes: list[str] = []
    if not has_content(program.gen_prompt) and has_content(request):
        program = program.model_copy(update={"gen_prompt": scrub_injected(request, keep=quoted_strings(request))[0]})
        notes.append(NO_DESCRIPTION_REPAIR)
    refs, seen = [], set()
    for ref in program.reference_images:
        if known_ids is not None and ref.img_id not in known_ids:
            notes.append(f"dropped unknown reference {ref.img_id}")
            continue
        if ref.img_id in seen:
            continue
        seen.add(ref.img_id)
        refs.append(ref)
    refs.sort(key=lambda r: id_number(r.img_id))
    if len(refs) > max_references:
        notes.append(f"kept the first {max_references} of {len(refs)} references")
        refs = refs[:max_references]
    prompt = program.gen_prompt
    order = {r.img_id: i for i, r in enumerate(refs)}

    def _ordinal(m: re.Match) -> str:
        i = order.get(m.group(0))
        return f"the {ORDINALS[i]} reference image" if i is not None and i < len(ORDINALS) else "the reference"

    if IMG_ID_RE.search(prompt):
        prompt = IMG_ID_RE.sub(_ordinal, prompt)
        notes.append("replaced IMG ids in gen_prompt with ordinal phrases")
    if URL_RE.search(unicodedata.normalize("NFKC", strip_quoted(prompt))):
        prompt, _ = scrub_injected(prompt, keep=quoted_strings(prompt))
        notes.append("removed URLs from gen_prompt")

    def _clamp(m: re.Match) -> str:
        return m.group(0) if ORDINAL_INDEX[m.group(1).lower()] <= len(refs) else "reference style"

    fixed = ORDINAL_REF_RE.sub(_clamp, prompt)
    if fixed != prompt:
        notes.append("removed ordinal phrases that point past the last reference")
    prompt = re.sub(r"\s{2,}", " ", fixed).strip()
    return program.model_copy(update={"gen_prompt": prompt, "reference_images": refs}), notes


def scrub_injected(text: str, keep: list[str] | tuple = ()) -> tuple[str, list[str]]:
    """``text`` without URLs, local file paths and template tokens, and what was removed.

    Matched after NFKC normalisation, so full-width or compatibility look-alikes
    (``ｈｔｔｐｓ：／／…``) are caught too. Quoted spans in ``keep`` (the texts the user asked to
    have drawn) stay verbatim; a part that held something to remove is kept in its NFKC form."""
    removed: list[str] = []
    out: list[str] = []
    pos = 0
    spans = [(m.start(), m.end(), next(g for g in m.groups() if g is not None).strip())
             for m in QUOTED_TEXT_RE.finditer(text)]
    for start, end, inner in spans + [(len(text), len(text), None)]:
        out.append(_scrub_part(text[pos:start], removed))
        if inner is not None:
            quoted = text[start:end]
            out.append(quoted if inner in keep else _scrub_part(quoted, removed))
        pos = end
    if not removed:
        return text, []
    cleaned = re.sub(r"[ \t]{2,}", " ", re.sub(r"\"\s*\"|“\s*”", "", "".join(out))).strip()
    return cleaned, removed


def _scrub_part(part: str, removed: list[str]) -> str:
    if not part:
        return part
    norm = unicodedata.normalize("NFKC", part)
    found = [m.group(0) for rx in _INJECTED for m in rx.finditer(norm)]
    if not found:
        return part
    removed.extend(found)
    for rx in _INJECTED:
        norm = rx.sub(" ", norm)
    return norm


def scrub_program(program: Program, request: str) -> tuple[Program, list[str]]:
    """The program without URLs, file paths or template tokens in its prompt and reference notes
    (a request, a web page or a hijacked model may put them there); the request's quoted texts stay."""
    keep = quoted_strings(request)
    prompt, removed = scrub_injected(program.gen_prompt, keep)
    refs = []
    for ref in program.reference_images:
        note, gone = scrub_injected(ref.note, keep)
        removed += gone
        refs.append(ref.model_copy(update={"note": note}))
    if not removed:
        return program, []
    shown = ", ".join(repr(r[:60]) for r in removed[:4]) + (" …" if len(removed) > 4 else "")
    return (program.model_copy(update={"gen_prompt": prompt or program.gen_prompt, "reference_images": refs}),
            [f"removed from the program (URLs, file paths and template tokens are never drawn): {shown}"])


def id_number(img_id: str) -> tuple[int, str]:
    """The sort key of an ``IMG_###`` id: its number (ids without one last), then the id."""
    m = re.search(r"(\d+)$", img_id)
    return (int(m.group(1)) if m else 10**9, img_id)


# ---------------------------------------------------------------- derived constraints

# Things that are the lettering's surface: "a sign that reads \"OPEN\"" is drawn as the text itself,
# so where the sign goes is where the text goes.
TEXT_CARRIERS = {"sign", "signs", "signboard", "chalkboard", "blackboard", "board", "banner", "poster", "label",
                 "title", "headline", "caption", "plaque", "placard", "billboard", "menu", "text", "words",
                 "lettering", "slogan", "sticker", "marquee", "heading", "tagline", "logotype", "wordmark"}


_ORDINAL_IMAGE_RE = re.compile(r"^(?:the\s+|my\s+|our\s+)?(" + "|".join(ORDINALS) + r")\s+(?:reference\s+)?"
                               r"(?:image|photo|picture|reference)s?$", re.IGNORECASE)


def ordinal_image_index(name: str | None) -> int | None:
    """0 for "the first image" / "first reference image", 1 for "second photo"…; None otherwise.
    A relation may name a reference by its ordinal ("place the first image below the chair"):
    it then means whatever that image shows."""
    m = _ORDINAL_IMAGE_RE.match((name or "").strip())
    return ORDINALS.index(m.group(1).lower()) if m else None


def is_text_carrier(name: str | None) -> bool:
    """Whether a subject name is the surface of the program's lettering (a sign, a banner, a title)."""
    return bool(name) and any(w in TEXT_CARRIERS for w in re.findall(r"[a-z]+", name.lower()))


def has_content(text: str) -> bool:
    """True when ``text`` has a letter, digit or symbol (emoji included), not only quotes,
    punctuation and spaces: '""' or "' '" asks for nothing that can be drawn or checked."""
    return any(unicodedata.category(ch)[0] in "LNS" for ch in text)


# The longest request a run accepts, in characters: the CLI, the studio and the agent all check this
# one number. A rich brief with a title, a date and a few constraints is 200-1,000 characters;
# beyond 4,000 a request is a pasted document, not a picture to draw, and every page of the
# studio that shows it grows with it.
MAX_REQUEST_CHARS = 4000


def request_problem(request: str, n_images: int = 0) -> str | None:
    """Why a request cannot be planned (a one-line message that says what to do), or None."""
    if n_images == 0 and not has_content(request):
        return ("the request is empty: say what to draw in words, "
                "e.g. 'a travel poster of Paris at dusk, title \"PARIS\"'")
    if len(request) > MAX_REQUEST_CHARS:
        return (f"the request is {len(request):,} characters; at most {MAX_REQUEST_CHARS:,} are accepted: "
                f"describe the picture in fewer words")
    return None


def quoted_strings(text: str) -> list[str]:
    """Quoted spans in order of appearance, without duplicates (spans of only quotes or
    punctuation are not text anyone asked for)."""
    out: list[str] = []
    for m in QUOTED_TEXT_RE.finditer(text):
        s = next(g for g in m.groups() if g is not None).strip()
        if s and has_content(s) and s not in out:
            out.append(s)
    return out


def count_constraints(text: str) -> list[Constraint]:
    out: list[Constraint] = []
    words = r"|".join(sorted((re.escape(w) for w in NUMBER_WORDS), key=len, reverse=True))
    # The number is consumed, the words after it only looked at, so "three identical white
    # teapots" finds "teapots" and "two cats and three dogs" still sees "three".
    pattern = re.compile(r"\b(?:exactly\s+)?(" + words + r"|\d{1,3})(?=((?:\s+[a-z][a-z'-]*){1,4}))",
                         re.IGNORECASE)
    seen = set()
    for m in pattern.finditer(strip_quoted(text)):
        num = m.group(1).lower()
        n = NUMBER_WORDS.get(num) if not num.isdigit() else int(num)
        if n is None or n < 1 or n > 50:
            continue
        if n == 1 and num not in ("one", "single", "1"):
            continue
        noun = _counted_noun(m.group(2).lower().split(), singular=n == 1)
        if noun is None or (noun, n) in seen:
            continue
        seen.add((noun, n))
        out.append(Constraint(kind="count", subject=noun, count=n))
    return out


def _is_plural(word: str) -> bool:
    if word in _IRREGULAR_PLURALS:
        return True
    return len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "ous", "is"))


def _counted_noun(following: list[str], singular: bool) -> str | None:
    """The counted noun among the (up to four) words after a number, or None."""
    last = None
    for w in following:
        if w in _NOT_COUNTABLE:
            break
        if singular:
            if _is_plural(w):
                return None
            last = w
        elif _is_plural(w):
            return w
    return last if singular else None


def relation_constraints(text: str) -> list[Constraint]:
    out: list[Constraint] = []
    for clause in re.split(r"[.;,!?\n]|\band\b|\bwhile\b|\bwith\b", strip_quoted(text)):
        m = _REL_RE.search(clause)
        if not m:
            continue
        subject = _noun_phrase(clause[: m.start()], take="last")
        obj = _noun_phrase(clause[m.end():], take="first")
        # A pronoun ("in front of it") cannot be checked without resolving it; leave it out.
        if subject and obj and obj not in _PRONOUNS and subject not in _PRONOUNS:
            out.append(Constraint(kind="relation", subject=subject,
                                  relation=RELATIONS[m.group(1).lower()], object=obj))
    return out


def wanted_texts(request: str) -> list[str]:
    """Every text the request wants printed: quoted strings, then the dates and times a poster,
    flyer or invitation names ("Saturday June 7"), in order, without duplicates."""
    out = quoted_strings(request)
    have = {t.lower() for t in out}
    for d in date_phrases(request):
        if d.lower() not in have and not any(d.lower() in t for t in have):
            out.append(d)
            have.add(d.lower())
    return out


def subject_constraints(text: str, counts: list[Constraint] | None = None,
                        relations: list[Constraint] | None = None) -> list[Constraint]:
    """One ``subject`` constraint per drawable thing the text names, with its count and arrangement."""
    counts = count_constraints(text) if counts is None else counts
    relations = relation_constraints(text) if relations is None else relations
    extra = [side for r in relations for side in (r.subject, r.object) if side]
    # A named thing the text is a picture of ("a photo of the Sydney Opera House at dusk").
    plain = strip_quoted(text)
    for name in extract_entities(text):
        # The named thing the text is a picture of: "a photo of the Sydney Opera House", or the
        # text opens with it ("The Sydney Opera House at dusk…").
        if re.search(rf"\bof\s+(?:the\s+)?{re.escape(name)}|^\s*(?:the\s+|an?\s+)?{re.escape(name)}\b",
                     plain, re.IGNORECASE):
            extra.append(name)
    mentions = subject_mentions(text, {c.subject: c.count for c in counts if c.subject and c.count}, extra)
    return [Constraint(kind="subject", subject=m.name, count=m.count, arrangement=m.arrangement,
                       object=m.container) for m in mentions]


def derive_constraints(request: str, program: Program | None = None) -> list[Constraint]:
    """Verifiable constraints: wanted text, explicit counts, spatial relations and subjects.

    The request is authoritative; quoted strings the program adds are kept too (marked
    ``source="program"``) when the request asks for them in words ("a poster for a market on
    Saturday June 7": the date), since the renderer will be asked to draw them. Text the request
    never asked to print is not a constraint: a judge that verified it would pay a program for
    inventing words it can read back (``invented_texts``).
    """
    out: list[Constraint] = [Constraint(kind="text", text=s) for s in wanted_texts(request)]
    counts = count_constraints(request)
    relations = relation_constraints(request)
    out += counts
    out += relations
    out += subject_constraints(request, counts, relations)
    if program is not None:
        have = {c.text.lower() for c in out if c.kind == "text"}
        invented = set(invented_texts(program.gen_prompt, request))
        for s in quoted_strings(program.gen_prompt):
            if s.lower() not in have and s not in invented and not ORDINAL_REF_RE.search(s) and len(s) <= 80:
                out.append(Constraint(kind="text", text=s, source="program"))
                have.add(s.lower())
    return out


_NOUNS_LIKE_VERBS = {"building", "buildings", "painting", "paintings", "ring", "king", "wing", "string", "swing",
                     "ceiling", "bed", "shed", "sled", "seed", "weed", "reed", "steed", "pudding", "dumpling",
                     "sapling", "seedling", "duckling", "earring", "wedding", "clothing", "bedding", "railing"}


def _is_participle(word: str) -> bool:
    w = word.lower()
    return len(w) > 4 and w.endswith(("ing", "ed")) and w not in _NOUNS_LIKE_VERBS


def _noun_phrase(fragment: str, take: str) -> str:
    # \b keeps the "s" of "1960s" from passing for a word.
    words = [w for w in re.findall(r"\b[A-Za-z][A-Za-z'-]*", fragment)]
    stop = {"is", "are", "sits", "sit", "stands", "stand", "placed", "place", "put", "with", "of",
            "one", "positioned", "located", "standing", "sitting", "floating", "hanging", "and",
            "on", "in", "at", "from", "into", "onto", "near", "by", "for", "to"}
    if take == "last":
        # The subject is the noun phrase just before the relation: drop trailing verbs
        # ("a cat sitting under"), then keep what follows the previous verb-ish word.
        while words and (words[-1].lower() in stop or (len(words) > 1 and _is_participle(words[-1]))):
            words.pop()
        words = words[-4:]
        for i in range(len(words) - 1, -1, -1):
            if words[i].lower() in stop:
                words = words[i + 1:]
                break
    else:
        cut = []
        for w in words:
            if w.lower() in stop and cut:
                break
            if w.lower() in stop:
                continue
            cut.append(w)
            if len(cut) == 4:
                break
        words = cut
    # A participle ends the name: "a Vespa parked", "ivy growing", "Huayna Picchu rising".
    for i, w in enumerate(words):
        if i and _is_participle(w):
            words = words[:i]
            break
    # Articles and counts are not part of the name of the thing ("three espresso cups" -> "espresso cups").
    words = [w for w in words if w.lower() not in _ARTICLES and w.lower() not in NUMBER_WORDS]
    return " ".join(words).lower().strip()


# The runtime's own phrases to the model. The protocol's messages are built from them
# (``protocol.correction_message``, ``FINAL_ROUND_MESSAGE``) and the leak check below from the same
# tuple, so rewording a message rewords the check.
CORRECTION_PREFIX = "Your last turn could not be used"
LAST_ROUND_RULE = "tool calls are no longer allowed"
FINAL_PROGRAM_ASK = "write your final program now"
PROMPT_CHECK = "the gen_prompt is not ready"
RUNTIME_PHRASES = (CORRECTION_PREFIX, LAST_ROUND_RULE, FINAL_PROGRAM_ASK, PROMPT_CHECK)

# Reasoning or protocol text that has no place in a prompt for a renderer: the one list the agent's
# answer check, the program-quality eval and the GRPO reward all use (LEAK_PATTERNS). Protocol words
# and copied think phrases can be cut out where they stand; self-talk makes its whole sentence go.
PROTOCOL_PATTERNS = [
    r"(?i)</?\s*(?:think|tool_call|tool_response|answer)\s*>",
    r"\{\s*\"(?:name|arguments|gen_prompt|reference_images|queries|skill_name)\"",
    r"(?i)\b(?:tool_call|tool_response|gen_prompt|reference_images|img_id|query_knowledge|image_search|"
    r"spatial_layout|aesthetic_drawing|text_rendering|creative_drawing|anatomy_body_coherence|attribute_binding|"
    r"physical_material_consistency|quantity_counting)\b",
    r"\bIMG_\d{3}\b",
    r"\(s\)",  # "toothbrush(s)": a template's plural, not a description
    # The teacher's own think phrases, which a student copies into its program.
    r"(?i)\b(?:will anchor its appearance|better than words|the \w+ guidance)\b",
    # ...and its tally of what it gathered ("0 fact(s), 1 reference image(s)").
    r"(?i)\b\d+\s+facts?\b(?=\s*(?:\(s\))?\s*,\s*\d+\s+reference)|\b\d+\s+reference images?\b",
]
SELF_TALK_PATTERNS = [
    # The model talking about its own work ("so I have what I need: 0 fact(s)…"), not describing the image.
    r"(?i)\b(?:I|we)\s+(?:have|need|will|should|must|can|found|think|know|got)\b|\b(?:I'll|I've|I'm|let me|let's)\b",
    r"(?i)\b(?:my plan|first, I|what I need)\b",
    r"(?i)\bthe user(?:'s)? (?:wants|asks|asked|requests|requested|request|is asking)\b",
    # An image has no "request" in it: "I see the request to the classic road motorcycle. Match the
    # appearance of the request" (the fixed teacher's SFT adapter on PartiPrompts' "a motorcycle").
    r"(?i)\b(?:(?:the|this|your) request|the prompt (?:asks|says))\b",
    r"(?i)\bI (?:see|saw|want|chose|choose|pick|picked|used?|bind|bound|searched|looked|added)\b",
    r"(?i)\b(?:so I (?:read|look)|I look (?:it|them) up|I have what I need|writing the program now|"
    r"no more tool calls)\b",
    # The runtime's own words to the model, which a student repeats in its program ("Your last turn
    # could not be used: 'first image' but only …" on held-out requests that give a picture).
    r"(?i)\b(?:" + "|".join(r"\s+".join(map(re.escape, p.split())) for p in RUNTIME_PHRASES) + r")\b",
    # ...and the garbled echoes of them that students wrote.
    r"(?i)\b(?:(?:the user's )?last turn has not yet been used|write the program now)\b",
]
LEAK_PATTERNS = PROTOCOL_PATTERNS + SELF_TALK_PATTERNS


# Words after which a request's unquoted words are text to print: "a sign that says Welcome Home",
# "a bakery called Sunrise", "the word 'hello'".
WRITING_CUE_RE = re.compile(
    r"\b(?:says?|saying|reads?|reading|written|writes?|writing|spell(?:s|ing|ed)?|titled?|captioned|caption|"
    r"label(?:l?ed)?|words?|text|letters?|called|named|name|logo|slogan|headline|inscribed|inscription)\b"
    r"[\s:,]*(?:the\s+|with\s+|on\s+it\s+)?$")
# Designs that carry printed words by nature: on "a poster for a market on Saturday June 7" the date
# is the poster's to print, on "a photo of a pink dog" the words "pink dog" are not.
TEXT_BEARING_RE = re.compile(
    r"\b(poster|flyer|banner|billboard|sign(?:board|age)?|label|cover|card|menu|logo|ticket|invitation|"
    r"brochure|leaflet|packaging|storefront|headline|magazine|newspaper|advert(?:isement)?|ad|t-shirt|mug|"
    r"infographic|certificate|badge|plaque|placard|postcard|sticker|wordmark)s?\b")


def invented_texts(prompt: str, request: str) -> list[str]:
    """The quoted texts of ``prompt`` that the request never asked to print: words the renderer
    would draw that nobody asked for ('Render the text "pink dog"' for "a photo of a pink dog").
    The request decides, in any case: a text is asked for when the request quotes it, has it right
    after a writing cue ("a sign that says Welcome Home"), or holds it while asking for a design
    that carries words ("a poster for a market on Saturday June 7"), unless the text is that
    design's own name ("stop sign" printed on a stop sign is not its text)."""
    asked_quotes = {" ".join(q.lower().split()) for q in quoted_strings(request)}
    asked = " ".join(request.lower().split())
    designs = {m.group(1) for m in TEXT_BEARING_RE.finditer(asked)}
    invented = []
    for q in quoted_strings(prompt):
        text = " ".join(q.lower().split())
        found = [m.start() for m in re.finditer(re.escape(text), asked)]
        if (text in asked_quotes or any(WRITING_CUE_RE.search(asked[:at]) for at in found)
                or (found and designs and not any(re.search(rf"\b{d}", text) for d in designs))):
            continue
        invented.append(q)
    return invented


# Counts a program may state that no request count backs: the anatomy skill's "5 fingers", and
# words for "whatever the request names" ("2 objects"), which a sentence-level check cannot judge.
_BODY_COUNTS = {"finger", "toe", "leg", "ear", "tail", "eye", "arm", "hand", "foot", "feet", "wing", "paw",
                "tooth", "teeth", "head", "limb", "horn", "claw"}
_UNJUDGED_COUNTS = {"object", "item", "thing", "element", "shape", "subject", "one", "part", "piece"}
_PEOPLE_WORDS = {"people", "person", "figure", "character", "human", "individual"}
_ANIMAL_WORDS = {"animal", "creature", "pet"}
_PAIR_WORDS_RE = re.compile(r"\b(?:pair|couple|twins?|both|two|2)\b", re.IGNORECASE)


_SENTENCE_BREAK = r"(?<=[.!?])[ \t]+|\s*[\n\t]\s*"


def prompt_sentences(prompt: str) -> list[str]:
    """The sentences of a gen_prompt: split after . ! ? and at line breaks and tabs."""
    return [p.strip() for p in re.split(_SENTENCE_BREAK, prompt) if p and p.strip()]


def sentence_key(sentence: str) -> str:
    """A sentence as compared for repeats: lower case, words only."""
    return " ".join(re.findall(r"[\w']+", sentence.lower()))


# Markup, code and digit runs no image description holds: "A motorcycle= science= layout:",
# "swirls of blusciencearticle{mid: date, read: } }", "A book[object]" (nano adapters on PartiPrompts).
_GARBLE_CHARS = r"=<>{}|\\\[\]_#*~^`"
_GARBLE_TOKEN_RE = re.compile(rf"\S*(?:[{_GARBLE_CHARS}]|\d{{6,}}|\d\.\d{{5,}})\S*")


def garbled_fragments(prompt: str, request: str) -> list[str]:
    """The words of ``prompt`` that carry markup or code characters, or runs of six digits and more,
    that the request does not have (a request with a hex colour or a file name keeps its own)."""
    out = []
    for m in _GARBLE_TOKEN_RE.finditer(prompt):
        token = m.group(0)
        odd = set(re.findall(rf"[{_GARBLE_CHARS}]", token)) - set(request)
        if odd or (re.search(r"\d{6,}|\d\.\d{5,}", token) and token.strip(".,;:!?") not in request):
            out.append(token)
    return list(dict.fromkeys(out))


def repeated_sentences(prompt: str) -> list[str]:
    """Sentences of three words or more that ``prompt`` says more than once, each listed once: a
    decoding loop ("High detail, coherent single image, …" ten times) spends the renderer's
    prompt on nothing and buries what was asked."""
    seen: dict[str, int] = {}
    first: dict[str, str] = {}
    for s in prompt_sentences(prompt):
        key = sentence_key(s)
        if len(key.split()) >= 3:
            seen[key] = seen.get(key, 0) + 1
            first.setdefault(key, s)
    return [first[k] for k, n in seen.items() if n > 1]


def without_repeats(prompt: str) -> str:
    """``prompt`` with each repeated sentence kept where it first stands (``repeated_sentences``);
    the breaks between the sentences kept are kept too (a line break still ends a sentence)."""
    repeated = {sentence_key(s) for s in repeated_sentences(prompt)}
    pieces = re.split(f"({_SENTENCE_BREAK})", prompt.strip())
    out, seen = [], set()
    for sentence, gap in zip(pieces[::2], pieces[1::2] + [""]):
        key = sentence_key(sentence)
        if key in repeated and key in seen:
            continue
        seen.add(key)
        out.append(sentence + gap)
    return "".join(out).strip()


# Words that frame a request without adding to it ("a photo of", "a picture of the ...").
_FRAMING_WORDS = frozenset("a an the of and in on at to with photo picture image".split())
# The planner teacher's closing line, the same on every program; the students learned it word for word.
QUALITY_LINE = "High detail, coherent single image, no watermark, no stray text."
# This many words of its own or fewer and a program is the request handed on as it came. Measured:
# beyond the quality line, the adapters' copies add 0-1 words, their other programs 3 or more.
COPY_MAX_OWN_WORDS = 1


def own_words(prompt: str, request: str) -> list[str]:
    """The words of ``prompt`` that the request does not have (singular forms compared, framing
    words such as "a photo of" and the teacher's fixed quality line left out): what the program
    adds to the request."""
    from genevolve.subjects import singular

    asked = {singular(w) for w in re.findall(r"[a-z0-9]+", request.lower())}
    prompt = re.sub(re.escape(QUALITY_LINE.rstrip(".")) + r"\.?", " ", prompt, flags=re.IGNORECASE)
    return [w for w in re.findall(r"[a-z0-9]+", prompt.lower())
            if w not in _FRAMING_WORDS and singular(w) not in asked]


# A prompt pointing the renderer at a picture: "the reference photo", "the first image", or a bare
# "the image" after a word that cites it ("the look of the image", "as in the picture"); "make this
# image special" speaks of the picture being drawn.
_PICTURE = r"(?:image|picture|photo)s?\b"
# "the reference style" is what ``repair_program`` leaves of an ordinal that points past the last
# reference: with none bound it still points the renderer at a picture it never gets.
_PICTURE_CITE_RE = re.compile(
    rf"\b(?:the|this|that|your)\s+(?:(?:first|second|third|fourth|same|given|attached|provided|uploaded|source|input)\s+)*"
    rf"reference\s+(?:{_PICTURE}|styles?\b)"
    rf"|\b(?:the|your)\s+(?:first|second|third|fourth|given|attached|provided|uploaded|source|input)\s+{_PICTURE}"
    rf"|\b(?:of|from|in|like|to|as)\s+(?:the|this|that|your)\s+{_PICTURE}", re.I)


def unbound_picture_citations(prompt: str, request: str, bound: int) -> list[str]:
    """The phrases by which ``prompt`` points at a picture ("match the look of the image") when the
    program binds none (``bound`` is how many it binds) and the request does not say them: the
    renderer is told to follow a picture it never gets. A student that learned the teacher's line
    for the user's picture wrote it on requests that gave none."""
    if bound:
        return []
    said = request.lower()
    return list(dict.fromkeys(m.group(0) for m in _PICTURE_CITE_RE.finditer(prompt) if m.group(0).lower() not in said))


def copied_request(prompt: str, request: str) -> bool:
    """``prompt`` adds at most ``COPY_MAX_OWN_WORDS`` words to the request besides the fixed
    quality line: no research, reference or skill guidance reaches the renderer ("A photo of three
    sinks. High detail, coherent single image, …" for "a photo of three sinks"). The planner teacher
    writes such a program where it has nothing to add (676 of 3,988 public requests: "a photo of a
    bench"); a policy that learned to answer at once writes it on nearly every request."""
    return bool(prompt.strip()) and len(own_words(prompt, request)) <= COPY_MAX_OWN_WORDS


def invented_counts(prompt: str, request: str) -> list[str]:
    """The counts of two or more that ``prompt`` states and the request never gave ("exactly 2
    airplanes" for "a small airplane", "2 people" on "a photo of a bench"): the renderer would
    draw them. A count is the request's when the request counts the same noun the same way (or
    says "a pair of" for two); "people" and "animals" are the request's when it shows any."""
    from genevolve.subjects import ANIMALS, PEOPLE, singular

    def key(noun: str) -> str:
        return singular(noun.split()[-1].lower())

    asked = {(key(c.subject), c.count) for c in count_constraints(request) if c.subject}
    request_words = {singular(w.lower()) for w in re.findall(r"[A-Za-z]+", strip_quoted(request))} | {
        w.lower() for w in re.findall(r"[A-Za-z]+", strip_quoted(request))}
    beings = ({"people"} if request_words & PEOPLE else set()) | ({"animals"} if request_words & ANIMALS else set())
    out = []
    for c in count_constraints(prompt):
        if not c.subject or not c.count or c.count < 2:
            continue
        noun = key(c.subject)
        if noun in _BODY_COUNTS or noun in _UNJUDGED_COUNTS or (noun, c.count) in asked:
            continue
        if (noun in _PEOPLE_WORDS and "people" in beings) or (noun in _ANIMAL_WORDS and "animals" in beings):
            continue
        if c.count == 2 and _PAIR_WORDS_RE.search(request) and re.search(rf"\b{re.escape(noun)}", request, re.I):
            continue
        out.append(f"{c.count} {c.subject}")
    return out


def unnamed_placements(prompt: str, request: str) -> list[str]:
    """Positions ``prompt`` states for things the request never names ("place the sink next to the
    table" on "a photo of three sinks"): a layout nobody asked for, with an object nobody asked for.
    A placement of named things ("the vase right of the horse" on "a vase and a horse") is not one:
    whether it keeps the request's positions is ``gen_prompt_problems``' other check."""
    named = {singular(w) for w in re.findall(r"[a-z0-9]+", request.lower())}
    out = []
    for r in relation_constraints(prompt):
        heads = [re.findall(r"[a-z]+", (side or "").lower())[-1:] for side in (r.subject, r.object)]
        if any(h and singular(h[0]) not in named for h in heads):
            out.append(f"{r.subject} {r.relation.replace('_', ' ')} {r.object}")
    return out


# A sentence that tells the renderer where to put things, as the spatial_layout skill's line does.
LAYOUT_INSTRUCTION_RE = re.compile(r"(?i)^\W*layout\s*:|\b(?:place|put|position|arrange)\s+(?:the|a|an|each|every)\b")


def misplaced_layout(prompt: str, request: str) -> list[str]:
    """The placements of things the request never names in ``prompt``'s layout instructions
    ("Layout: place the sink next to the table." on "a photo of three sinks": the 270M students
    fill the spatial_layout line with an object of their own). A description that sets the scene
    ("A kite over a green hill.") is the writer's to give; the eval counts every
    ``unnamed_placements`` all the same."""
    return [p for s in prompt_sentences(prompt) if LAYOUT_INSTRUCTION_RE.search(s)
            for p in unnamed_placements(s, request)]


def reasoning_leaks(prompt: str, request: str) -> list[str]:
    """The reasoning or protocol fragments in ``prompt`` that the request itself does not contain."""
    found = []
    for pattern in LEAK_PATTERNS:
        for m in re.finditer(pattern, prompt):
            if m.group(0).lower() not in request.lower():
                found.append(m.group(0))
    return found
