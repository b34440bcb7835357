"""The planner: a rule-based expert policy that needs no model.

It is the offline default and the teacher whose trajectories seed SFT, so every turn it writes
follows the protocol exactly (``<think>`` + one ``<tool_call>`` or ``<answer>``).

It is stateless: each call re-reads the conversation (request, past tool calls, tool responses,
runtime messages) and decides the next turn, so it works inside the agent loop, after a store
round-trip and inside a replay. The plan for a request is fixed and ordered:

1. ``search`` once for the named entities (a small capitalisation-based extractor),
2. ``image_search`` once per distinct subject (entities first, then counted/animate/related
   nouns, else the main noun phrase), skipped for what the user's own images already show; the
   turn after each reply opens with its verdict ("IMG_002 shows horse, so I bind it." or why none),
3. ``query_knowledge`` for each routed skill (trigger rules, at most ``max_skills``),
4. ``answer``: a program that applies the activated skills, carries the facts found and cites
   at most ``max_references`` references by ordinal phrase only.

A final-round message or a correction message makes it answer at once with what it has.
``sample(messages, n)`` returns ``n`` identical turns: the planner is deterministic on purpose,
so a group of planner rollouts is a reproducible baseline rather than noise.

Where each concern lives:

    policy.py        PlannerPolicy: the plan and the program
    conversation.py  read_state: the request, calls made and replies seen, from the messages
    english.py       word lists; subjects, attribute pairs, people and animals in a request
    routing.py       skill triggers, SKILL_PRIORITY, route_skills
    evidence.py      facts from a search reply, the picture that shows a subject
    writers.py       the brief (gen_prompt): the request restated and one line per skill

The tools' reply formats are parsed where they are written (``tools/search.py``,
``tools/image_search.py``), so the planner never re-implements a format.
"""

from genevolve.english import extract_subjects
from genevolve.policies.planner.policy import PlannerPolicy
from genevolve.policies.planner.routing import SKILL_PRIORITY, route_skills
from genevolve.subjects import extract_entities

__all__ = ["PlannerPolicy", "SKILL_PRIORITY", "extract_entities", "extract_subjects", "route_skills"]
