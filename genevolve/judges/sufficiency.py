"""Program sufficiency: does the program carry everything a renderer needs? Score on {0, .25, .5, .75, 1}.

Four checks, a quarter each; each pays for research that is *relevant* (``genevolve.relevance``,
the same test the program-quality eval reports), so neither copying the request nor pasting facts
about something else earns it:

1. ``facts_carried``   - no sentence of the gen_prompt carries a fact from a search result about
                         something the request does not name, none is presented as a fact that
                         no search result holds; on a knowledge case, at least one
                         relevant fact is carried, or the searches found nothing relevant ("nothing
                         relevant found" is a valid outcome). A knowledge case with no search fails.
2. ``ordinal_references`` - every chosen reference is cited by an ordinal phrase ("the first
                         reference image"), no phrase points past the last reference, no IMG
                         id or URL leaks, user-provided images are not ignored, no bound
                         reference is of something the request does not name, and a matching picture
                         (of what the request names, in the colours it asks for) is bound when one
                         was shown or the offline library holds one.
3. ``skills_applied``  - the skills the request needs (text, counting, layout, the category's
                         own skill, and those the teacher read where the case records them)
                         were consulted with ``query_knowledge``, and the program is more than
                         the request as written (a copy applies none).
4. ``constraints_executable`` - every hard constraint derived from the request (exact text,
                         counts, spatial relations) is stated in the gen_prompt, and the gen_prompt
                         carries no reasoning or protocol text and says no sentence twice.

Besides the pass/fail checks (``details["checks"]``, and ``sufficiency`` = the share passed),
the local judge gives each check a credit in [0, 1] (``details["credit"]``, mean in
``details["graded"]``): the share of needed skills consulted, the share of the request's
constraints stated, half a fact check for a knowledge case that searched and found something
relevant but carried none of it, half a reference check for a matching picture that was shown
but not bound. The GRPO reward pays the graded mean: a rollout that does half the research
earns more than one that does none, where the checks alone score both as failed. A program that
is the request as written, on a request that needs skills, has a graded mean of 0: it did none of
the research, whatever the other checks let pass.

``score_program(case, trajectory_or_program)`` is the entry point the trainer uses for
R_text. With only a Program (no trajectory), checks 1 and 3 cannot be made and count as not
passed (``details["unchecked"]`` says which): pass the trajectory whenever you have it.
With an endpoint (``sufficiency:<model>@<base_url>``) an LLM makes the same four checks.
"""

from __future__ import annotations

import json
import re

from genevolve.judges.base import Judge, Scores, case_question
from genevolve.judges.chat_endpoint import ChatEndpoint, parse_json_reply
from genevolve.specs import read_flag
from genevolve.program import (
    IMG_ID_RE,
    NUMBER_WORDS,
    ORDINAL_REF_RE,
    ORDINALS,
    RELATIONS,
    URL_RE,
    Constraint,
    Program,
    copied_request,
    derive_constraints,
    garbled_fragments,
    invented_counts,
    invented_texts,
    misplaced_layout,
    reasoning_leaks,
    repeated_sentences,
    unbound_picture_citations,
)
from genevolve.relevance import bound_references, carried_facts, colour_grounds, invented_colours, search_sources

CHECKS = ("facts_carried", "ordinal_references", "skills_applied", "constraints_executable")

KNOWLEDGE_CATEGORIES = {"architecture_landmark", "street_view", "public_figure", "product", "vehicle",
                        "event", "science", "cultural_relic"}
CATEGORY_SKILLS = {
    "text_layout": "text_rendering", "spatial_relation": "spatial_layout", "counting": "quantity_counting",
    "anatomy": "anatomy_body_coherence", "attribute_binding": "attribute_binding",
    "material": "physical_material_consistency", "aesthetics": "aesthetic_drawing",
    "creative_transformation": "creative_drawing",
}
CONSTRAINT_SKILLS = {"text": "text_rendering", "count": "quantity_counting", "relation": "spatial_layout"}

_STOP = set("""a an the and or of in on at to for with by from as is are was were be been this that these those it its
his her their our your my we you they he she them than then there here into onto over under about after before
during while which who whom whose what when where why how all any each both few more most other some such no not
only own same so too very can will just also may might must should would could one two three new image photo
picture reference first second style scene""".split())


def is_knowledge_case(case: dict) -> bool:
    track = str(case.get("track") or case.get("eval_type") or "").lower()
    return "knowledge" in track or str(case.get("category") or "").lower() in KNOWLEDGE_CATEGORIES


def needed_skills(case: dict, constraints: list[Constraint]) -> list[str]:
    """The skills a request needs: those of its text, counts and positions and its category's own,
    and, where the case records the teacher's run (RL prompts do), every skill the teacher read.
    Without the teacher's, 41 of 175 RL prompts needed none, so a copy of the request passed the
    check there while the teacher read two or three skills and carried their guidance."""
    skills = [CONSTRAINT_SKILLS[c.kind] for c in constraints if c.source == "request" and c.kind in CONSTRAINT_SKILLS]
    cat_skill = CATEGORY_SKILLS.get(str(case.get("category") or "").lower())
    if cat_skill:
        skills.append(cat_skill)
    teacher = case.get("teacher") if isinstance(case.get("teacher"), dict) else {}
    skills += [s for s in teacher.get("skills") or [] if isinstance(s, str)]
    return sorted(set(skills))


def constraint_stated(c: Constraint, prompt: str) -> bool:
    """Whether the gen_prompt states a constraint in a form a renderer can execute."""
    low = prompt.lower()
    if c.kind == "text":
        return bool(c.text) and c.text.lower() in low
    if c.kind == "count":
        numbers = {str(c.count)} | {w for w, n in NUMBER_WORDS.items() if n == c.count}
        has_number = any(re.search(rf"\b{re.escape(w)}\b", low) for w in numbers)
        return has_number and _mentions(c.subject or "", low)
    if c.kind == "subject":
        from genevolve.subjects import mentions_subject

        return mentions_subject(c.subject or "", low)
    if c.kind == "relation":
        phrases = [p for p, r in RELATIONS.items() if r == c.relation]
        return (_mentions(c.subject or "", low) and _mentions(c.object or "", low)
                and any(p in low for p in phrases))
    return False


def constraint_coverage(constraints: list[Constraint], prompt: str) -> float | None:
    """Share of the request's constraints the prompt states; None when there are none."""
    req = [c for c in constraints if c.source == "request"]
    if not req:
        return None
    return round(sum(constraint_stated(c, prompt) for c in req) / len(req), 6)


def _mentions(phrase: str, low: str) -> bool:
    # The head noun, tolerant of plural/singular ("apples" vs "apple").
    words = [w for w in re.findall(r"[a-z][a-z'-]*", phrase.lower()) if w not in _STOP]
    if not words:
        return True
    head = words[-1]
    stem = head[:-1] if head.endswith("s") and len(head) > 3 else head
    return stem in low


def _trajectory_and_program(obj):
    from genevolve.trajectory import Trajectory

    if obj is None:
        return None, None
    if isinstance(obj, Trajectory):
        return obj, obj.program
    if isinstance(obj, Program):
        return None, obj
    if isinstance(obj, dict):
        if "steps" in obj or "messages" in obj:
            traj = Trajectory.from_dict(obj)
            return traj, traj.program
        return None, Program.from_answer(obj) if "gen_prompt" in obj else None
    raise TypeError(f"expected a Trajectory, Program or dict, got {type(obj).__name__}")


def local_sufficiency(case: dict, trajectory_or_program, library: list[tuple[str, str]] | None = None) -> Scores:
    """The four checks computed from the trajectory (or the program alone). ``library``: (title,
    caption) of the pictures the offline image search could have found; None: only what the
    trajectory was shown counts as findable."""
    traj, program = _trajectory_and_program(trajectory_or_program)
    spec = "sufficiency"
    if program is None:
        return Scores.failed(spec, "no program: the rollout ended without an answer")
    request = case_question(case) or (traj.request if traj else "")
    prompt = program.gen_prompt
    constraints = derive_constraints(request, program)
    checks: dict[str, bool] = {}
    credit: dict[str, float] = {}  # what the reward pays; a passed check is 1.0
    notes: dict[str, str] = {}
    unchecked: list[str] = []

    # 1. facts carried: relevant ones only
    if traj is None:
        checks["facts_carried"], credit["facts_carried"] = False, 0.0
        unchecked.append("facts_carried")
    else:
        credit["facts_carried"], notes["facts_carried"] = _facts_check(case, traj, request, prompt)
        checks["facts_carried"] = credit["facts_carried"] == 1.0

    # 2. ordinal references
    n = len(program.reference_images)
    cited = {m.group(1).lower() for m in ORDINAL_REF_RE.finditer(prompt)}
    cited_idx = {ORDINALS.index(w) + 1 if w in ORDINALS else int(w[0]) for w in cited}
    problems = []
    if IMG_ID_RE.search(prompt):
        problems.append("IMG id in gen_prompt")
    if URL_RE.search(prompt):
        problems.append("URL in gen_prompt")
    if any(i > n for i in cited_idx):
        problems.append("ordinal past the last reference")
    unbound = unbound_picture_citations(prompt, request, n)  # "match the look of the image", none bound
    if unbound:
        problems.append(f"points at a picture it does not bind: {unbound[:2]}")
    missing = [i for i in range(1, n + 1) if i not in cited_idx]
    if missing:
        problems.append(f"reference(s) {missing} never cited by ordinal")
    if traj is not None and traj.user_image_ids:
        used = {r.img_id for r in program.reference_images}
        if not used & set(traj.user_image_ids):
            problems.append("the user's reference image is not used")
    shown_not_bound = False
    if traj is not None:
        relevance_problems, shown_not_bound = _reference_relevance_problems(traj, program, request, library)
        problems += relevance_problems
    checks["ordinal_references"] = not problems
    # The research half done (the matching picture was found, then not bound) earns half.
    credit["ordinal_references"] = 1.0 if not problems else 0.5 if shown_not_bound and len(problems) == 1 else 0.0
    notes["ordinal_references"] = "; ".join(problems) or f"{n} reference(s), all cited"

    # 3. skills applied
    need = needed_skills(case, constraints)
    # A program that is the request as written carries no skill's guidance, whatever was read.
    copied = bool(need) and copied_request(prompt, request)
    if traj is None:
        checks["skills_applied"] = not need
        credit["skills_applied"] = float(not need)
        if need:
            unchecked.append("skills_applied")
    else:
        used_skills = set(traj.skills_used())
        lacking = [s for s in need if s not in used_skills]
        checks["skills_applied"] = not lacking and not copied
        credit["skills_applied"] = 0.0 if copied else 1.0 - len(lacking) / len(need) if need else 1.0
        notes["skills_applied"] = f"needed {need}, consulted {sorted(used_skills)}" + (
            "; the program is the request as written, so none of their guidance reaches it" if copied else "")

    # 4. hard constraints executable
    coverage = constraint_coverage(constraints, prompt)
    leaked = reasoning_leaks(prompt, request)
    # Text the request never had, quoted for the renderer to print, is a constraint nobody set: it
    # costs like a dropped one (an OCR-read reward would otherwise pay the model for inventing it).
    invented = invented_texts(prompt, request)
    counted = invented_counts(prompt, request)  # "exactly 2 airplanes" for "a small airplane", likewise
    placed = misplaced_layout(prompt, request)  # "Layout: place the sink next to the table." for "three sinks"
    looped = repeated_sentences(prompt)  # a decoding loop buries what was asked
    garbled = garbled_fragments(prompt, request)  # "motorcycle= science=": markup a renderer would draw
    # "the bench is blue" on "a photo of a bench": a colour nobody asked for, unless research gave it.
    grounds = colour_grounds(traj, search_sources(traj), bound_references(program, traj, request)) if traj is not None else []
    coloured = invented_colours(prompt, request, grounds)
    checks["constraints_executable"] = ((coverage is None or coverage >= 1.0) and not leaked and not invented
                                        and not counted and not placed and not coloured and not looped and not garbled)
    # A leak, a loop, garbled words or an invented constraint costs the whole check; a dropped one its share.
    credit["constraints_executable"] = (0.0 if leaked or invented or counted or placed or coloured or looped or garbled
                                        else 1.0 if coverage is None else float(coverage))
    notes["constraints_executable"] = ("no hard constraints" if coverage is None
                                       else f"{coverage:.0%} of request constraints stated")
    if leaked:
        notes["constraints_executable"] += f"; reasoning or protocol text in the prompt: {leaked[:3]}"
    if invented:
        notes["constraints_executable"] += f"; text to print that the request never had: {invented[:3]}"
    if counted:
        notes["constraints_executable"] += f"; counts the request never gave: {counted[:3]}"
    if placed:
        notes["constraints_executable"] += f"; layout of things the request never names: {placed[:3]}"
    if coloured:
        notes["constraints_executable"] += f"; colours the request never gave: {coloured[:3]}"
    if looped:
        notes["constraints_executable"] += f"; said more than once: {looped[:2]}"
    if garbled:
        notes["constraints_executable"] += f"; markup or code in the prompt: {garbled[:3]}"

    value = sum(checks.values()) / 4
    # Where skills are needed, a copy of the request does none of the work this half pays for: it
    # earns nothing here. With only the skill check's quarter lost, a copy scored 0.875 of the
    # hybrid reward against the teacher's 1.0 on the GRPO pool, level with a program that adds the
    # right guidance and slips once, so GRPO's groups taught the copy (docs/bench/programs.md).
    graded = 0.0 if copied and traj is not None else round(sum(credit[k] for k in CHECKS) / 4, 6)
    rationale = "; ".join(f"{k}: {'pass' if checks[k] else 'fail'} ({notes.get(k, 'not checkable without a trajectory')})"
                          for k in CHECKS)
    return Scores(sufficiency=value, overall=value, constraint_coverage=coverage, rationale=rationale,
                  judge=spec, details={"checks": checks, "credit": credit, "graded": graded, "unchecked": unchecked,
                           "needed_skills": need, "copy": copied})


def _facts_check(case: dict, traj, request: str, prompt: str) -> tuple[float, str]:
    """(credit, note): 1 passes; 0.5 a knowledge case that found relevant results and carried none."""
    from genevolve.relevance import result_about_request, unsupported_facts

    sources = search_sources(traj)
    facts = carried_facts(prompt, request, sources)
    irrelevant = [f for f in facts if not f["relevant"]]
    relevant = len(facts) - len(irrelevant)
    if irrelevant:
        about = sorted({t for f in irrelevant for t in f["sources"]})[:3]
        return 0.0, f"{len(irrelevant)} fact(s) about what the request does not name ({about})"
    # "Facts to respect: the cat is a mammal" with nothing searched behind it: a claim, not research.
    made_up = unsupported_facts(prompt, request, sources)
    if made_up:
        return 0.0, f"{len(made_up)} sentence(s) presented as facts that no search result holds ({made_up[0][:80]})"
    searched = any(s.tool_name == "search" for s in traj.tool_calls())
    if not is_knowledge_case(case):
        return 1.0, f"{relevant} relevant fact(s); none needed"
    if not searched:
        return 0.0, "no search on a knowledge case"
    if relevant:
        return 1.0, f"{relevant} relevant fact(s) carried"
    found = any(result_about_request(request, t, p) for t, p in sources)
    if found:
        return 0.5, "the searches found relevant results; the prompt carries none of them"
    return 1.0, "searched; nothing relevant found, and nothing carried"


def _reference_relevance_problems(traj, program, request: str, library) -> tuple[list[str], bool]:
    """(problems, whether the only gap is a matching picture that was shown and left unbound)."""
    from genevolve.relevance import picture_matches

    refs = bound_references(program, traj, request)
    problems = []
    off = [r["title"] or r["img_id"] for r in refs if not r["relevant"]]
    if off:
        problems.append(f"reference(s) of something the request does not name: {off[:3]}")
    shown_not_bound = False
    if not any(r["relevant"] for r in refs):
        # A picture in other colours than the request asks for is no match: bound, it would repaint the
        # subject (bound_references counts it irrelevant), so leaving it out is right, as the teacher does.
        shown = [i.title for i in traj.images if i.source != "user" and picture_matches(request, i.title or "", i.caption or "")]
        held = [t for t, c in (library or []) if picture_matches(request, t, c)]
        if shown or held:
            problems.append(f"a matching picture was {'shown' if shown else 'in the library'} "
                            f"({(shown or held)[0]}) but none is bound")
            shown_not_bound = bool(shown)
    return problems, shown_not_bound


_LIBRARIES: dict[str, list[tuple[str, str]]] = {}


def library_subjects(folder: str | None) -> list[tuple[str, str]]:
    """(title, caption) of every picture in an offline library folder (read once per folder)."""
    if not folder:
        return []
    if folder not in _LIBRARIES:
        from genevolve.tools.image_search import LocalLibrary

        _LIBRARIES[folder] = [(c.title, c.caption) for c in LocalLibrary(folder, embeddings=False).entries()]
    return _LIBRARIES[folder]


SUFFICIENCY_SYSTEM = ("You audit image-generation programs written by a research agent. You reply "
                      "with one JSON object and nothing else.")

SUFFICIENCY_RUBRIC = """An agent researched a request with tools and then wrote a program for an
image generator. Decide four yes/no checks about the program.

Request:
<<<
{request}
>>>

What the agent's tools returned (abridged):
<<<
{evidence}
>>>

Skills consulted: {skills}

Program:
{program}

Checks:
- facts_carried: the facts the request depends on (identity, distinctive visual details,
  dates, names) found by the tools are written into gen_prompt, not left implicit.
- ordinal_references: each reference image is cited in gen_prompt by an ordinal phrase
  ("the first reference image"), with a note saying what to take from it; no ids or URLs.
- skills_applied: the guidance of the consulted skills (text rendering, counting, layout,
  anatomy, materials, aesthetics...) visibly shapes gen_prompt where the request needs it.
- constraints_executable: every hard constraint (exact text in quotes, exact counts,
  positions) is stated explicitly enough for a renderer with no other context.

Reply with exactly:
{{"rationale": "<one sentence per check>", "facts_carried": true|false,
  "ordinal_references": true|false, "skills_applied": true|false,
  "constraints_executable": true|false}}"""


class SufficiencyJudge(Judge):
    """``sufficiency`` (local rubric) or ``sufficiency:<model>@<base_url>`` (an LLM)."""

    def __init__(self, endpoint: ChatEndpoint | None = None, spec: str = "sufficiency",
                 library_dir: str | None = "default"):
        self.endpoint = endpoint
        self.spec = spec
        # The offline library a policy could have found a matching picture in ("default": the
        # shipped one; None: only pictures the trajectory was shown count).
        if library_dir == "default":
            from genevolve.config import Settings

            library_dir = Settings().library_dir
        self.library_dir = library_dir

    def _score(self, case, image, program, trajectory) -> Scores:
        return self._score_program(case, trajectory if trajectory is not None else program)

    def score_program(self, case: dict, trajectory_or_program) -> Scores:
        """Score a trajectory (preferred) or a bare program on {0, .25, .5, .75, 1}.

        Never raises: anything that cannot be scored comes back ``status="failed"``."""
        return self.score(case, None, None, trajectory_or_program)

    def _score_program(self, case: dict, trajectory_or_program) -> Scores:
        if self.endpoint is None:
            scores = local_sufficiency(case, trajectory_or_program, library_subjects(self.library_dir))
            scores.judge = self.spec
            return scores
        traj, program = _trajectory_and_program(trajectory_or_program)
        if program is None:
            return Scores.failed(self.spec, "no program: the rollout ended without an answer")
        evidence, skills = "(no trajectory given)", "(unknown)"
        if traj is not None:
            evidence = "\n".join(f"[{s.tool_name} {json.dumps(s.tool_arguments, ensure_ascii=False)}] "
                                 f"{(s.tool_text or '')[:600]}" for s in traj.tool_calls())[:6000] or "(no tool calls)"
            skills = ", ".join(traj.skills_used()) or "none"
        request = case_question(case) or (traj.request if traj else "")
        text = SUFFICIENCY_RUBRIC.format(request=request, evidence=evidence, skills=skills,
                                         program=json.dumps(program.to_official(), ensure_ascii=False, indent=1))
        reply = self.endpoint.complete([{"role": "system", "content": SUFFICIENCY_SYSTEM},
                                        {"role": "user", "content": text}])
        try:
            data = {str(k).lower(): v for k, v in parse_json_reply(reply).items()}
        except ValueError as exc:
            return Scores.failed(self.spec, f"unreadable judge reply: {exc}", raw=reply)
        checks, missing = {}, []
        for name in CHECKS:
            v = data.get(name)
            if isinstance(v, str) and read_flag(v) is not None:
                v = read_flag(v)
            if not isinstance(v, (bool, int)) or v not in (0, 1, True, False):
                missing.append(name)
            else:
                checks[name] = bool(v)
        if missing:
            return Scores.failed(self.spec, f"judge reply incomplete: missing or non-boolean {missing}", raw=reply)
        value = sum(checks.values()) / 4
        coverage = constraint_coverage(derive_constraints(request, program), program.gen_prompt)
        return Scores(sufficiency=value, overall=value, constraint_coverage=coverage,
                      rationale=str(data.get("rationale") or ""), judge=self.spec, raw=reply,
                      details={"checks": checks})


def score_program(case: dict, trajectory_or_program, endpoint: ChatEndpoint | None = None) -> Scores:
    """Convenience: the sufficiency score of a trajectory/program (local rubric without endpoint)."""
    return SufficiencyJudge(endpoint).score_program(case, trajectory_or_program)
