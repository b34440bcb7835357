"""``PlannerPolicy``: the plan for a request, and the program written from what the tools returned."""

from __future__ import annotations

from typing import Iterator, Sequence

from genevolve.policies.base import PolicyBase
from genevolve.policies.planner.conversation import PlannerState, read_state
from genevolve.english import extract_subjects
from genevolve.policies.planner.evidence import best_image, facts_from
from genevolve.policies.planner.routing import SKILL_REASONS, route_skills
from genevolve.policies.planner.writers import write_brief
from genevolve.program import ORDINALS, Program, repair_program, validate_program
from genevolve.protocol import format_answer, format_tool_call
from genevolve.relevance import picture_matches
from genevolve.subjects import extract_entities
from genevolve.tools.image_search import parse_image_lines


class PlannerPolicy(PolicyBase):
    """Rule-based expert policy; see the package docstring for the plan it follows."""

    name = "planner"

    def __init__(self, max_skills: int = 5, max_subjects: int = 3, max_entities: int = 3,
                 max_references: int = 2, search_top_k: int = 3, image_top_k: int = 3, verdicts: bool = False,
                 **_ignored):
        self.max_skills = max_skills
        self.max_subjects = max_subjects
        self.max_entities = max_entities
        self.max_references = max_references
        self.search_top_k = search_top_k
        self.image_top_k = image_top_k
        # Off by default: a student SFT'd on verdicts bound whatever picture came back (8 of 8
        # external binds wrong, clean 86% -> 50%; docs/bench/programs.md, 2026-12-06).
        self.verdicts = verdicts

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
        state = read_state(messages)
        # The turn after an image_search reply first says what it found and whether it binds it:
        # the decision is written next to its evidence, and the answer's thought repeats it.
        verdict = self.picture_verdict(state) + " " if self.verdicts and state.last_reply_is("image_search") else ""
        if not state.must_answer:
            for name, args, think in self.plan(state.request, state.user_ids):
                if (name, args) not in state.done_calls:
                    return format_tool_call(name, args, think=verdict + think)
        program, think = self.write_program(state, images)
        return format_answer(program.to_official(), think=verdict + think)

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
                          f"{SKILL_REASONS[skill]} so I read the {skill} guidance."))
        return steps

    # ------------------------------------------------------------------ the answer

    def pictures(self, state: PlannerState) -> list[tuple[str, str, str]]:
        """The pictures the program binds, in order of preference: the user's own, then per
        image_search the best match that shows the searched subject as the request asks it, while
        fewer than ``max_references`` are chosen. Each is (img_id, subject, note)."""
        chosen: list[tuple[str, str, str]] = [
            (uid, "your image", "the user's own image: keep its subject, look and identity") for uid in state.user_ids]
        for name, args, text in state.responses:
            if name == "image_search" and len(chosen) < self.max_references:
                subject, best = self._best_match(state.request, args, text)
                if best and best not in (c[0] for c in chosen):
                    chosen.append((best, subject, f"appearance of {subject}"))
        return chosen[: self.max_references]

    @staticmethod
    def _best_match(request: str, args: dict, text: str) -> tuple[str, str | None]:
        subject = str(args.get("query", ""))
        # Only a picture of something the request names, in the colours it asks for, may anchor
        # the render (a red motorcycle would repaint "a black motorcycle").
        found = [f for f in parse_image_lines(text) if picture_matches(request, f.title, f.caption)]
        return subject, best_image(subject, found)

    def picture_verdict(self, state: PlannerState) -> str:
        """One sentence on the last image_search reply: the id it binds, or why it binds none."""
        _, args, text = state.responses[-1]
        subject, best = self._best_match(state.request, args, text)
        if best is None:
            if not parse_image_lines(text):
                return f"No picture of {subject} came back, so I go on without one."
            return f"None of these pictures shows {subject} as asked, so I bind none."
        if any(img_id == best for img_id, _, _ in self.pictures(state)):
            return f"{best} shows {subject}, so I bind it."
        return f"{best} shows {subject}, but {self.max_references} pictures are already chosen, so I bind none."

    def write_program(self, state: PlannerState, images: Sequence = ()) -> tuple[Program, str]:
        request = state.request
        known = {*state.user_ids}
        facts: list[str] = []
        skills: list[str] = []
        for name, args, text in state.responses:
            if name == "image_search":
                known.update(line.img_id for line in parse_image_lines(text))
            elif name == "search":
                facts += facts_from(text, args.get("queries") or [], request)
            elif name == "query_knowledge" and "error" not in text[:40].lower():
                skills.append(str(args.get("skill_name")))
        chosen = self.pictures(state)
        chosen.sort(key=lambda c: int(c[0].split("_")[1]))
        ordinal = {img_id: ORDINALS[i] for i, (img_id, _, _) in enumerate(chosen)}
        # Skills it read guide the brief; when forced to answer early, the routed ones still apply.
        active = skills or route_skills(request)[: self.max_skills]
        prompt = write_brief(request, state.user_ids, chosen, ordinal, facts, active)
        program = Program(gen_prompt=prompt,
                          reference_images=[{"img_id": i, "note": note} for i, _, note in chosen])
        if validate_program(program, known, self.max_references):
            program, _ = repair_program(program, known, self.max_references)
        guidance = f" and the {', '.join(active)} guidance" if active else ""
        if self.verdicts:
            # The pictures first and by id, as the verdicts named them.
            bound = " and ".join(f"{i} for {subject}" for i, subject, _ in chosen) or "no reference image"
            think = f"I have what I need: {bound}, {len(facts)} fact(s){guidance}. Writing the program now."
        else:
            # Each bound picture named next to its id, after the count (with the ids first, a 270M
            # student wrote IMG_001 whenever an id had been shown: docs/bench/programs.md).
            which = f" ({', '.join(f'{i} for {subject}' for i, subject, _ in chosen)})" if chosen else ""
            think = (f"I have what I need: {len(facts)} fact(s), {len(chosen)} reference image(s){which}"
                     f"{guidance}. Writing the program now.")
        if state.must_answer and not state.responses:
            think = "No more tool calls are allowed, so I answer from the request alone."
        return program, think
