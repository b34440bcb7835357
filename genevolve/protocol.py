"""The turn protocol the policy speaks.

Each assistant turn is ``<think>…</think>`` followed by exactly one
``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` or ``<answer>{json}</answer>``.
Tool output goes back as a user message ``<tool_response>\\n…\\n</tool_response>``.

``parse_turn`` never raises: anything it cannot read becomes a ``Turn`` with ``error`` set,
so the runtime can send one corrective message instead of crashing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Literal

# The runtime's phrases live with the leak check that must recognise them (a floor below).
from genevolve.program import (
    COPY_MAX_OWN_WORDS,
    CORRECTION_PREFIX,
    FINAL_PROGRAM_ASK,
    LAST_ROUND_RULE,
    PROMPT_CHECK,
    PROTOCOL_PATTERNS,
    SELF_TALK_PATTERNS,
    count_constraints,
    invented_counts,
    invented_texts,
    misplaced_layout,
    own_words,
    quoted_strings,
    reasoning_leaks,
    relation_constraints,
    strip_quoted,
    unbound_picture_citations,
)

TURN_END_STRINGS = ("</tool_call>", "</answer>")

# The one list of skill names ``query_knowledge`` accepts: a fact of the protocol, shared by our
# knowledge tool and the official dialect. Its order is the catalogue's: error replies and the
# system prompt list the skills in it, as the official release does. (The planner has its own
# priority among them: genevolve.policies.planner.routing.SKILL_PRIORITY.)
SKILLS = ("spatial_layout", "aesthetic_drawing", "text_rendering", "creative_drawing", "anatomy_body_coherence",
          "attribute_binding", "physical_material_consistency", "quantity_counting")
_TAGS = ("think", "tool_call", "answer", "tool_response")
_ANY_TAG_RE = re.compile(r"<\s*(/?)\s*(think|tool_call|answer|tool_response)\s*>", re.IGNORECASE)


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Turn:
    kind: Literal["tool_call", "answer", "error"]
    think: str = ""
    tool_call: ToolCall | None = None
    answer: dict[str, Any] | None = None
    error: str | None = None
    raw: str = ""


def loads_lenient(text: str) -> Any:
    """json.loads that forgives what models commonly get wrong.

    Code fences, text around the object, trailing commas, Python-style True/False/None and
    single-quoted keys are repaired; anything else raises ValueError.
    """
    s = text.strip()
    fence = re.match(r"^```[a-zA-Z]*\s*(.*?)\s*```$", s, re.DOTALL)
    if fence:
        s = fence.group(1)
    try:
        return json.loads(s)
    except (json.JSONDecodeError, RecursionError):
        pass
    start = min((i for i in (s.find("{"), s.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise ValueError("no JSON object found")
    candidate = s[start:]
    end = max(candidate.rfind("}"), candidate.rfind("]"))
    if end >= 0:
        candidate = candidate[: end + 1]
    repaired = re.sub(r",\s*([}\]])", r"\1", candidate)
    repaired = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null", repaired)))
    for attempt in (candidate, repaired, re.sub(r"'([^'\\]*)'\s*:", r'"\1":', repaired)):
        try:
            return json.loads(attempt)
        except (json.JSONDecodeError, RecursionError):
            continue
    raise ValueError("malformed JSON")


def parse_turn(text: Any) -> Turn:
    """Parse one assistant turn into think / tool_call / answer, or a format error."""
    try:
        return _parse_turn(text if isinstance(text, str) else str(text))
    except Exception as exc:  # noqa: BLE001 - the contract is: never raise
        return Turn(kind="error", error=f"unreadable turn ({type(exc).__name__})", raw=str(text)[:10000])


def _parse_turn(text: str) -> Turn:
    think_m = re.search(r"<think>(.*?)</think>", text, re.DOTALL)
    think = think_m.group(1).strip() if think_m else ""
    rest = text[think_m.end():] if think_m else text
    if not think_m and "<think>" in text:
        return Turn(kind="error", error="<think> is not closed with </think>", raw=text)
    calls = _blocks(rest, "tool_call")
    answers = _blocks(rest, "answer")
    if len(calls) + len(answers) == 0:
        if "<tool_call>" in rest or "<answer>" in rest:
            return Turn(kind="error", think=think, raw=text,
                        error="the <tool_call> or <answer> block is not closed")
        return Turn(kind="error", think=think, raw=text,
                    error="no <tool_call> or <answer> block after </think>")
    if len(calls) + len(answers) > 1:
        return Turn(kind="error", think=think, raw=text,
                    error="a turn must contain exactly one <tool_call> or <answer> block")
    if calls:
        try:
            data = loads_lenient(calls[0])
        except ValueError as exc:
            return Turn(kind="error", think=think, raw=text, error=f"tool_call is not valid JSON: {exc}")
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"].strip():
            return Turn(kind="error", think=think, raw=text,
                        error='tool_call must be {"name": <tool>, "arguments": {...}}')
        args = data.get("arguments", data.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = loads_lenient(args) if args.strip() else {}
            except ValueError:
                return Turn(kind="error", think=think, raw=text, error="tool_call arguments are not a JSON object")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return Turn(kind="error", think=think, raw=text, error="tool_call arguments must be a JSON object")
        return Turn(kind="tool_call", think=think, tool_call=ToolCall(data["name"].strip(), args), raw=text)
    try:
        data = loads_lenient(answers[0])
    except ValueError as exc:
        return Turn(kind="error", think=think, raw=text, error=f"answer is not valid JSON: {exc}")
    if not isinstance(data, dict):
        return Turn(kind="error", think=think, raw=text, error="answer must be a JSON object")
    return Turn(kind="answer", think=think, answer=data, raw=text)


def _inside_json_string(body: str) -> bool:
    """True when the end of ``body`` (the start of a JSON block) lies inside a string literal."""
    inside = escaped = False
    for ch in body:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = inside
        elif ch == '"':
            inside = not inside
    return inside


def _block_end(text: str, body_start: int, close: str) -> int:
    """Where ``close`` ends the block that starts at ``body_start``, or -1.

    User text is data: a request that contains "</answer>" may be copied into the JSON, so a
    closing tag inside a JSON string does not end the block. When every candidate is inside a
    string (malformed JSON), the first one counts, as a plain search would have it.
    """
    first = pos = text.find(close, body_start)
    while pos >= 0:
        if not _inside_json_string(text[body_start:pos]):
            return pos
        pos = text.find(close, pos + 1)
    return first


def _blocks(text: str, tag: str) -> list[str]:
    out, open_t, close_t, i = [], f"<{tag}>", f"</{tag}>", 0
    while (start := text.find(open_t, i)) >= 0:
        end = _block_end(text, start + len(open_t), close_t)
        if end < 0:
            break
        out.append(text[start + len(open_t):end])
        i = end + len(close_t)
    return out


def _dump_block(obj: dict) -> str:
    # "</" is written "<\/" (JSON's own escape for "/"): copied user text that holds
    # "</answer>" can never close the block early, and json.loads gives the same string back.
    return json.dumps(obj, ensure_ascii=False).replace("</", "<\\/")


def format_tool_call(name: str, arguments: dict, think: str = "") -> str:
    body = _dump_block({"name": name, "arguments": arguments})
    return f"<think>{neutralise(think)}</think>\n<tool_call>{body}</tool_call>"


def format_answer(answer: dict, think: str = "") -> str:
    return f"<think>{neutralise(think)}</think>\n<answer>{_dump_block(answer)}</answer>"


def neutralise(text: str) -> str:
    """Defang protocol tags inside tool output so a web page can never act as the model.

    ``<answer>`` becomes ``‹answer›``: still readable, never parsed.
    """
    return _ANY_TAG_RE.sub(lambda m: f"‹{m.group(1)}{m.group(2).lower()}›", text)


def format_tool_response(text: str) -> str:
    return f"<tool_response>\n{neutralise(text)}\n</tool_response>"


def unwrap_tool_response(message: str) -> str | None:
    """The text of a tool-response message (what ``format_tool_response`` wrapped), or None for any
    other message. Lenient: a missing closing tag keeps the rest."""
    text = message.strip()
    if not text.startswith("<tool_response>"):
        return None
    body = text[len("<tool_response>"):]
    if "</tool_response>" in body:
        body = body[: body.rfind("</tool_response>")]
    return body.strip()


def user_images_note(listing: str) -> str:
    """What the first user message ends with when the user gave images: ``IMG_001 (title), …``."""
    return f"\n\nThe user provided reference images: {listing}."


_USER_IMAGES_NOTE_RE = re.compile(r"\n*The user provided reference images: (.*)\.\s*$", re.DOTALL)


def split_user_images_note(content: str) -> tuple[str, str | None]:
    """``(request, listing)`` from a first user message; listing is None when it has no image note."""
    m = _USER_IMAGES_NOTE_RE.search(content)
    return (content[: m.start()], m.group(1)) if m else (content, None)


def truncate_at_turn_end(text: str) -> str:
    """Cut generated text right after the closing action tag (models may run on).

    A closing tag inside a JSON string of its block (copied from the request) is data, not
    the end of the turn.
    """
    ends = []
    for close in TURN_END_STRINGS:
        open_t = close.replace("/", "")
        start = text.find(open_t)
        pos = _block_end(text, start + len(open_t), close) if start >= 0 else text.find(close)
        if pos >= 0:
            ends.append((pos, close))
    if not ends:
        return text
    pos, s = min(ends)
    return text[: pos + len(s)]


# ---------------------------------------------------------------- prompts

def default_system_prompt() -> str:
    return resources.files("genevolve").joinpath("prompts/system.md").read_text(encoding="utf-8")


def load_system_prompt(path: str | Path | None = None) -> str:
    """Our system prompt, or the user's file in its place."""
    if path is None:
        return default_system_prompt()
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"system prompt file not found: {p}")
    text = p.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"system prompt file is empty: {p}")
    return text


FINAL_ROUND_MESSAGE = (
    f"This is the last round: {LAST_ROUND_RULE}. Using what you have gathered, "
    f"{FINAL_PROGRAM_ASK} as <think>…</think><answer>{{\"gen_prompt\": …, "
    "\"reference_images\": […]}</answer>."
)


def correction_message(error: str) -> str:
    return (
        f"{CORRECTION_PREFIX}: {error}. Reply again with <think>…</think> followed by "
        "exactly one <tool_call>{\"name\": …, \"arguments\": {…}}</tool_call> or one "
        "<answer>{\"gen_prompt\": …, \"reference_images\": […]}</answer>."
    )


# ---------------------------------------------------------------- the answer's gen_prompt

def gen_prompt_problems(request: str, gen_prompt: str, think: str = "",
                        unsupported: list[str] | None = None, bound: int | None = None, *,
                        off_request: list[str] | None = None,
                        colours_nobody_gave: Callable[[str], list[str]] | None = None) -> list[str]:
    """What a gen_prompt lost from the request or let in from the conversation, one line each
    (empty when it is fine). Kept: every quoted text, verbatim (any quote style), every subject
    (its head noun), every count and every position of the request. Left out: the model's reasoning and protocol words, and
    the sentences of ``unsupported`` still in the prompt: "facts" that none of the run's search
    results holds (the caller finds them, ``relevance.unsupported_facts``), and those of ``off_request``:
    facts a search gave about something the request does not name (``relevance.carried_facts``). With
    ``bound`` (how many pictures the program binds), a prompt that points at a picture while binding
    none is one too; with ``colours_nobody_gave`` (text -> the colours it gives things the request
    names that neither the request nor the run's research gave them: the caller binds
    ``relevance.invented_colours`` to its request and research), each such colour. So is a layout
    instruction that places a thing the request never names ("Layout: place the sink next to the
    table." on "three sinks"); a description may still set the scene ("a kite over a green hill")."""
    problems = [f'it must contain the quoted text "{q}" exactly as written' for q in quoted_strings(request)
                if q not in gen_prompt]
    invented = invented_texts(gen_prompt, request)
    if invented:
        shown = ", ".join(f'"{q}"' for q in invented)
        problems.append(f"it must not ask for printed text the request never had ({shown}): "
                        "describe those things in words, without quotes")
    made_up = [s for s in unsupported or () if s in gen_prompt]
    if made_up:
        problems.append("it must present as facts only what a search result said, not "
                        + "; ".join(f'"{m[:80]}"' for m in made_up) + ": describe the image instead")
    strays = [s for s in off_request or () if s in gen_prompt]
    if strays:
        problems.append("it must carry only facts about what the request names, not "
                        + "; ".join(f'"{s[:80]}"' for s in strays) + ": leave those out")
    counted = invented_counts(gen_prompt, request)
    if counted:
        problems.append(f"it must not state a count the request never gave ({', '.join(counted)}): "
                        "keep the request's own numbers")
    if colours_nobody_gave is not None:
        coloured = colours_nobody_gave(gen_prompt)
        if coloured:
            problems.append(f"it must not give colours the request never gave ({', '.join(coloured)}): "
                            "leave those colours out")
    from genevolve.english import lost_subjects

    problems += [f"it must show what the request shows: {h}" for h in lost_subjects(gen_prompt, request)]
    placed = misplaced_layout(gen_prompt, request)
    if placed:
        problems.append(f"it must not place things the request never names ({', '.join(placed)}): "
                        "leave that layout out")
    have_counts = {(c.subject, c.count) for c in count_constraints(gen_prompt)}
    for c in count_constraints(request):
        if (c.subject, c.count) not in have_counts:
            problems.append(f"it must keep the count: {c.count} {c.subject}")
    have_relations = relation_constraints(gen_prompt)
    for r in relation_constraints(request):
        if not any(h.relation == r.relation and _same_thing(h.object, r.object) and _same_thing(h.subject, r.subject)
                   for h in have_relations):
            problems.append(f"it must keep the position: {r.subject} {r.relation.replace('_', ' ')} {r.object}")
        if _contradicts(r, have_relations):
            problems.append(f"it must state the position one way only: {r.subject} {r.relation.replace('_', ' ')} "
                            f"{r.object}, never the reverse")
    cited = unbound_picture_citations(gen_prompt, request, bound) if bound is not None else []
    if cited:
        shown = ", ".join(f'"{c}"' for c in cited)
        problems.append(f"it points the renderer at a picture the program does not bind ({shown}): bind that "
                        "picture in reference_images, or describe what it shows in words")
    own = strip_quoted(gen_prompt)  # the request's quoted text is the user's to print, whatever it says
    asked = request.lower()
    leaked = (reasoning_leaks(own, request) + _copied_reasoning(think, own, asked)
              + [w for q in invented for w in reasoning_leaks(q, request)])
    if leaked:
        shown = ", ".join(f'"{w}"' for w in dict.fromkeys(leaked))
        problems.append(f"it must describe only the image, without your reasoning or protocol words ({shown})")
    return problems


def without_reasoning(request: str, gen_prompt: str, think: str = "",
                      unsupported: list[str] | None = None, bound: int | None = None, *,
                      off_request: list[str] | None = None,
                      colours_nobody_gave: Callable[[str], list[str]] | None = None) -> tuple[str, list[str]]:
    """``gen_prompt`` with the model's reasoning and protocol words taken out, and what was taken.

    For a program kept after its correction turn failed: the renderer gets a description, never
    "spatial_layout" or "will anchor its appearance". Protocol words and copied think phrases are
    cut where they stand ("A photo of a black backpack will anchor its appearance better than
    words." keeps "A photo of a black backpack."); a sentence of self-talk ("I have what I need")
    goes whole, and so does a sentence that quotes reasoning the request never had ('Render the
    text "… will anchor its appearance"') or, after the first sentence (the description), one that
    asks to print a text the request never had ('Render the text "pink dog" exactly.') or states a
    count it never gave ("Counts: exactly 2 cats." for "a cat"), is one of the ``unsupported``
    "facts" or of the ``off_request`` ones, gives a colour nobody gave (``colours_nobody_gave``:
    "The arms are red." for "a robot"), lays out a thing the request never names ("Layout: place the
    sink next to the table." for "three sinks"), or takes a position of the request
    back ("the horse is right of the vase" for "a vase right of a horse"), or, with ``bound`` 0,
    points at a picture the program does not bind ("Match the look of the image."). The
    request's quoted text is the user's and is never touched, and nothing is taken out when that
    would lose a quoted text, count or position the prompt kept, or leave no description."""
    asked = request.lower()
    kept: list[tuple[str, str]] = []  # (sentence, the break that followed it)
    removed: list[str] = []
    pieces = re.split(r"((?<=[.!?])[ \t]+|\s*[\n\t]\s*)", gen_prompt.strip())  # a tab parts pieces too
    # Facts no search result holds ("Facts to respect: the cat is a mammal" with nothing searched) and
    # facts about what the request does not name (the Eiffel Tower's height in a program about Mars).
    dropped_facts = set(unsupported or ()) | set(off_request or ())
    for index, (sentence, gap) in enumerate(zip(pieces[::2], pieces[1::2] + [""])):
        invented = invented_texts(sentence, request)
        if any(reasoning_leaks(q, request) for q in invented) or (invented and index > 0):
            removed.append(sentence)  # text nobody asked to print, reasoning or not
            continue
        if index > 0 and sentence.strip() in dropped_facts:
            removed.append(sentence)
            continue
        if index > 0 and colours_nobody_gave is not None and colours_nobody_gave(sentence):
            removed.append(sentence)  # "The arms are red." for "a robot waving": a colour nobody gave
            continue
        if index > 0 and bound is not None and unbound_picture_citations(sentence, request, bound):
            removed.append(sentence)  # "Match the subject, look and identity of the image." with none bound
            continue
        if index > 0 and invented_counts(sentence, request):
            removed.append(sentence)  # "Counts: exactly 2 cats…" for "a cat"
            continue
        if index > 0 and misplaced_layout(sentence, request):
            removed.append(sentence)  # "Layout: place the sink next to the table." for "three sinks"
            continue
        if index > 0 and any(_contradicts(r, relation_constraints(sentence)) for r in relation_constraints(request)):
            removed.append(sentence)  # "…; the horse is right of the vase" for "a vase right of a horse"
            continue
        own = strip_quoted(sentence)
        copied = _copied_reasoning(think, own, asked)
        if not reasoning_leaks(own, request) and not copied:
            kept.append((sentence, gap))
            continue
        talk = [m.group(0) for p in SELF_TALK_PATTERNS for m in re.finditer(p, own) if m.group(0).lower() not in asked]
        if talk and not _holds_quotes(sentence):
            removed.append(sentence)
            continue
        head, tail = _split_after_quotes(sentence)
        if talk and tail and any(re.search(p, tail) for p in SELF_TALK_PATTERNS) and not _holds_quotes(tail):
            # Self-talk glued to the user's quote with no break ('reads "NORTH POINT"ENOUGH WORDS …
            # I have what I have'): the quote and what came before it stay, the rest goes.
            kept.append((head if re.search(r"[.!?]$", head) else head + ".", gap))
            removed.append(tail)
            continue
        cut = sentence
        found = copied + [m.group(0) for p in PROTOCOL_PATTERNS for m in re.finditer(p, own)]
        for fragment in sorted(dict.fromkeys(found), key=len, reverse=True):  # "the x guidance" before "x"
            if fragment.lower() in asked or fragment not in strip_quoted(cut):
                continue
            cut = _cut_outside_quotes(cut, fragment)
            removed.append(fragment)
        cut = re.sub(r"\s+([,.;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", cut)).strip()
        cut = re.sub(r"^[,;:]\s*|[,;:](?=[.!?]$)", "", cut).strip()
        if re.search(r"[A-Za-z]{2,}", strip_quoted(cut)):
            kept.append((cut, gap))
    cleaned = "".join(text + gap for text, gap in kept).strip()
    if not removed or not re.search(r"[A-Za-z]{3,}", strip_quoted(cleaned)):
        return gen_prompt, []
    checks = {"unsupported": unsupported, "bound": bound, "off_request": off_request,
              "colours_nobody_gave": colours_nobody_gave}
    before = gen_prompt_problems(request, gen_prompt, think, **checks)
    lost = [p for p in gen_prompt_problems(request, cleaned, **checks)
            if p not in before and "your reasoning" not in p]
    return (gen_prompt, []) if lost else (cleaned, list(dict.fromkeys(removed)))


def with_request_quotes(request: str, gen_prompt: str) -> tuple[str, list[str]]:
    """``gen_prompt`` with every quoted text of the request it lost appended, verbatim, and those texts.

    For a program kept after its correction turn failed: the user's exact words reach the renderer
    even when the model dropped them (a quote it did not escape ends the JSON string early)."""
    missing = [q for q in quoted_strings(request) if q not in gen_prompt]
    if not missing:
        return gen_prompt, []
    text = gen_prompt.rstrip()
    if text and text[-1] not in ".!?":
        text += "."
    return text + "".join(f' The text "{q}" appears exactly as written.' for q in missing), missing


def with_request_constraints(request: str, gen_prompt: str) -> tuple[str, list[str]]:
    """``gen_prompt`` with the request's own sentence as its description when it lost a subject,
    count or position of the request, and what it had lost ("toothbrush below pizza", "robot").

    For a program kept after its correction turn failed ("A photo of toothbrush." for "a photo of
    a toothbrush below a pizza"): the renderer gets what the user asked. A first sentence that adds
    no words of its own is a partial copy and is replaced; any other is kept after the request's
    words. Nothing changes when restoring would lose anything the prompt kept."""
    def lost(problems: list[str]) -> list[str]:
        return [p.split(": ", 1)[1] for p in problems
                if p.startswith(("it must keep the count: ", "it must keep the position: ",
                                 "it must show what the request shows: "))]

    before = gen_prompt_problems(request, gen_prompt)
    missing = lost(before)
    if not missing:
        return gen_prompt, []
    from genevolve.english import without_framing

    described = without_framing(request)  # the scene, not "pls" or "hey, can I get"
    described = described[:1].upper() + described[1:]
    if described[-1] not in ".!?":
        described += "."
    pieces = re.split(r"((?<=[.!?])[ \t]+|\s*[\n\t]\s*)", gen_prompt.strip(), maxsplit=1)
    first, rest = pieces[0], "".join(pieces[2:]) if len(pieces) > 2 else ""
    if len(own_words(first, request)) > COPY_MAX_OWN_WORDS:
        rest = gen_prompt.strip()
    restored = (described + " " + rest).strip()
    after = gen_prompt_problems(request, restored)
    if lost(after) or [p for p in after if p not in before]:
        return gen_prompt, []
    return restored, missing


def _holds_quotes(sentence: str) -> bool:
    return bool(quoted_strings(sentence))


def _split_after_quotes(sentence: str) -> tuple[str, str]:
    """``sentence`` cut where a word is glued to the closing mark of its last quoted text
    ('"NORTH POINT"ENOUGH WORDS …', a decoding slip no writer makes): (up to and with the quote,
    the rest); the rest is empty when the quote is followed by a space or punctuation."""
    from genevolve.subjects import QUOTED_TEXT_RE

    ends = [m.end() for m in QUOTED_TEXT_RE.finditer(sentence)]
    if not ends or not sentence[ends[-1]:ends[-1] + 1].isalnum():
        return sentence, ""
    return sentence[:ends[-1]], sentence[ends[-1]:].strip()


def _cut_outside_quotes(sentence: str, fragment: str) -> str:
    """``sentence`` without the occurrences of ``fragment`` that are not inside a quoted text."""
    from genevolve.subjects import QUOTED_TEXT_RE

    parts, last = [], 0
    for m in QUOTED_TEXT_RE.finditer(sentence):
        parts.append(sentence[last:m.start()].replace(fragment, " "))
        parts.append(m.group(0))
        last = m.end()
    parts.append(sentence[last:].replace(fragment, " "))
    return "".join(parts)


_OPPOSITE = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above",
             "in_front_of": "behind", "behind": "in_front_of"}


def _contradicts(asked, stated) -> bool:
    """Whether the stated relations take the asked one back: "the vase is right of the horse; the
    horse is right of the vase" keeps the words and loses the layout."""
    opposite = _OPPOSITE.get(asked.relation)
    return any((h.relation == asked.relation and _same_thing(h.subject, asked.object)
                and _same_thing(h.object, asked.subject))
               or (h.relation == opposite and _same_thing(h.subject, asked.subject)
                   and _same_thing(h.object, asked.object))
               for h in stated)


def _same_thing(a: str | None, b: str | None) -> bool:
    """Two noun phrases name the same thing when their last words agree ("the red door" / "door")."""
    last = lambda s: (s or "").lower().split()[-1:] or [""]  # noqa: E731
    return last(a)[0].rstrip("s") == last(b)[0].rstrip("s")


def _copied_reasoning(think: str, prompt: str, asked: str, n: int = 6) -> list[str]:
    """The longest run (``n`` words or more) of the think text that the prompt repeats and the
    request does not hold; empty when there is none."""
    words = re.findall(r"[\w'-]+", think.lower())
    prompt_l = " " + " ".join(re.findall(r"[\w'-]+", prompt.lower())) + " "
    asked_l = " " + " ".join(re.findall(r"[\w'-]+", asked)) + " "
    copied = lambda i, j: f" {' '.join(words[i:j])} " in prompt_l and f" {' '.join(words[i:j])} " not in asked_l  # noqa: E731
    best = ""
    for i in range(len(words) - n + 1):
        j = i + n
        if not copied(i, j):
            continue
        while j < len(words) and copied(i, j + 1):
            j += 1
        if j - i > len(best.split()):
            best = " ".join(words[i:j])
    return [best] if best else []


def left_out_picture_problem(img_id: str, title: str, subject: str, ordinal: str) -> str:
    """The answer check's line for a picture the run found of something the request names, left
    unbound: what to add, word for word, so that a small model can take it as it stands."""
    return (f'the answer leaves out {img_id} ({title}), found for "{subject}", which the request names: '
            f'add {{"img_id": "{img_id}", "note": "appearance of {subject}"}} to reference_images and '
            f'say in the gen_prompt "Match the appearance of the {subject} shown in the {ordinal} reference image."')


def prompt_correction_message(problems: list[str], left_out: str | None = None) -> str:
    """The one user message that sends an answer back when its gen_prompt fails the check, or when
    it leaves out a picture found for the request (``left_out_picture_problem``)."""
    parts = ([f"{PROMPT_CHECK}: " + "; ".join(problems)] if problems else []) + ([left_out] if left_out else [])
    return (f"{CORRECTION_PREFIX}: " + "; and ".join(parts) + ". Reply again with "
            "<think>…</think> and <answer>{\"gen_prompt\": …, \"reference_images\": […]}</answer>, "
            + " and ".join((["the gen_prompt fixed"] if problems else []) + (["the picture bound"] if left_out else []))
            + ".")
