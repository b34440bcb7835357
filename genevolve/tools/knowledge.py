"""``query_knowledge(skill_name)``: one of eight generation skills, as markdown written for the planner.

The skills live in ``genevolve/tools/skills/<name>.md``. Names are forgiving: "Text Rendering",
"text-rendering" and "text_rendering" are one skill, and a close misspelling is accepted; an
unknown name gets an error that lists the valid ones.
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from importlib import resources

from genevolve.profiles import profile_of
from genevolve.protocol import SKILLS  # the one list of skill names, in catalogue order
from genevolve.tools.base import Tool, ToolContext, ToolResult


def normalise_skill_name(name: str) -> str | None:
    """The canonical skill name for ``name``, or None when nothing is close enough."""
    key = re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")
    key = re.sub(r"_?skill$", "", key)
    if key in SKILLS:
        return key
    close = difflib.get_close_matches(key, SKILLS, n=1, cutoff=0.82)
    if close:
        return close[0]
    prefixed = [s for s in SKILLS if key and s.startswith(key) and len(key) >= 5]
    return prefixed[0] if len(prefixed) == 1 else None


@lru_cache(maxsize=None)
def skill_text(name: str, short: bool = False) -> str:
    """The skill's guidance; ``short`` is the few-line form the compact nano profile sends."""
    file = f"skills/{name}.short.md" if short else f"skills/{name}.md"
    return resources.files("genevolve.tools").joinpath(file).read_text(encoding="utf-8").strip()


class KnowledgeTool(Tool):
    name = "query_knowledge"
    description = "Guidance for one generation skill: when it applies and what to write into gen_prompt."
    backend_name = "skills"

    def canonical_args(self, args: dict) -> dict:
        skill = normalise_skill_name(_raw_name(args) or "")
        return {"skill_name": skill or str(_raw_name(args))}

    def answer_official(self, args: dict, ctx: ToolContext | None = None) -> ToolResult:
        return _official(args, profile_of(ctx).assets, self.backend_name)

    def answer(self, args: dict, ctx: ToolContext | None = None) -> ToolResult:
        profile = profile_of(ctx)
        valid = ", ".join(SKILLS)
        raw = _raw_name(args)
        if not isinstance(raw, str) or not raw.strip():
            msg = f'skill_name is required. Call it as {{"skill_name": "text_rendering"}}; valid names: {valid}.'
            return ToolResult(text=f"query_knowledge: {msg}", error="missing skill_name", backend=self.backend_name)
        skill = normalise_skill_name(raw)
        if skill is None:
            msg = f"unknown skill {raw!r}. Valid skill names: {valid}."
            return ToolResult(text=f"query_knowledge: {msg}", error=f"unknown skill {raw!r}",
                              backend=self.backend_name)
        short = profile_of(ctx).short_skills
        return ToolResult(text=skill_text(skill, short), backend=self.backend_name, meta={"skill": skill})


def _official(args: dict, assets, backend: str) -> ToolResult:
    """Exact skill names only; the skill text from the user's copy of the official release."""
    from genevolve.official import assets as official_assets
    from genevolve.official import turns

    name = (args.get("skill_name") or "").strip()
    if not name or name not in official_assets.SKILL_NAMES:
        return ToolResult(text=turns.unknown_skill(name, official_assets.SKILL_NAMES), backend=backend,
                          error=f"unknown skill {name!r}")
    text = assets.skill(name)
    if text is None:
        return ToolResult(text=turns.missing_skill(name, assets.skill_file(name)), backend=backend,
                          error=f"no skill file for {name!r}")
    return ToolResult(text=turns.skill_reply(name, text), backend=backend, meta={"skill": name})


def _raw_name(args) -> object:
    if isinstance(args, str):
        return args
    if not isinstance(args, dict):
        return None
    for key in ("skill_name", "skill", "name"):
        if key in args:
            return args[key]
    return None
