"""The official release's texts, read at run time from the user's own copy.

The released checkpoint was trained on a system prompt, a final-step message and eight skill
texts that ship with the official release (github.com/MeiGen-AI/GenEvolve). We never store them;
``OfficialAssets`` reads them from a checkout (``/path/to/GenEvolve``), from the package folder of
an installed copy (``.../site-packages/genevolve``), from ``$GENEVOLVE_OFFICIAL_PATH``, or from an
installed distribution that carries them.

The prompt and message are string constants in the release's ``genevolve/system_prompt.py``; they
are read with ``ast`` (the module is parsed, never imported or executed).
"""

from __future__ import annotations

import ast
import hashlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from genevolve.protocol import SKILLS

ENV_VAR = "GENEVOLVE_OFFICIAL_PATH"
PROMPT_MODULE = "system_prompt.py"
PROMPT_NAME = "SYSTEM_PROMPT"
FINAL_NAME = "FINAL_STEP_MESSAGE"
SKILLS_DIR = Path("knowledge") / "skills"
# The skill names and their order, as the official knowledge tool lists them to the model: the
# release's eight skills are ours, in the same order.
SKILL_NAMES = SKILLS

WHERE_TO_GET = ("The official profile reads the released system prompt, final-step message and skill texts "
                "from your copy of the official release. Get it with "
                "`git clone https://github.com/MeiGen-AI/GenEvolve` (or `pip install` it) and pass "
                f"`--protocol official:/path/to/GenEvolve`, or set {ENV_VAR}.")


class OfficialAssetsError(FileNotFoundError):
    """The official release's texts cannot be found or read; the message says where to get them."""


@dataclass(frozen=True)
class OfficialAssets:
    package_dir: Path  # the folder holding system_prompt.py and knowledge/skills/
    system_prompt: str
    final_step_message: str
    skills_dir: Path
    skills: dict = field(default_factory=dict, compare=False, hash=False)  # name -> text (files that exist)

    @property
    def digest(self) -> str:
        """Changes when any of the texts change (tool-cache entries depend on them)."""
        h = hashlib.sha256()
        for part in (self.system_prompt, self.final_step_message, *(f"{k}\0{v}" for k, v in sorted(self.skills.items()))):
            h.update(part.encode("utf-8"))
            h.update(b"\1")
        return h.hexdigest()[:16]

    def skill(self, name: str) -> str | None:
        return self.skills.get(name)

    def skill_file(self, name: str) -> Path:
        return self.skills_dir / f"{name}.md"


def locate(path: str | os.PathLike | None = None) -> Path:
    """The official package folder (the one holding ``system_prompt.py``), or OfficialAssetsError."""
    tried: list[str] = []
    candidates: list[Path] = []
    given = path if path not in (None, "") else os.environ.get(ENV_VAR) or None
    if given:
        root = Path(given).expanduser()
        candidates += [root, root / "genevolve"]
    else:
        candidates += _installed_copies()
    for folder in candidates:
        tried.append(str(folder))
        if (folder / PROMPT_MODULE).is_file() and not _is_ours(folder):
            return folder.resolve()
    where = f" (looked in: {', '.join(tried)})" if tried else " (no path given and no installed copy found)"
    raise OfficialAssetsError(f"official release not found{where}. {WHERE_TO_GET}")


def load(path: str | os.PathLike | None = None) -> OfficialAssets:
    folder = locate(path)
    return _load(str(folder), _mtimes(folder))


@lru_cache(maxsize=8)
def _load(folder: str, _stamp: tuple) -> OfficialAssets:
    package = Path(folder)
    module = package / PROMPT_MODULE
    constants = read_string_constants(module, (PROMPT_NAME, FINAL_NAME))
    missing = [n for n in (PROMPT_NAME, FINAL_NAME) if not constants.get(n)]
    if missing:
        raise OfficialAssetsError(f"{module} has no string constant {', '.join(missing)}; is this the official "
                                  f"release? {WHERE_TO_GET}")
    skills_dir = package / SKILLS_DIR
    skills = {}
    for name in SKILL_NAMES:
        f = skills_dir / f"{name}.md"
        if f.is_file():
            skills[name] = f.read_text(encoding="utf-8")
    return OfficialAssets(package_dir=package, system_prompt=constants[PROMPT_NAME],
                          final_step_message=constants[FINAL_NAME], skills_dir=skills_dir, skills=skills)


def read_string_constants(module: Path, names) -> dict[str, str]:
    """Top-level ``NAME = "literal"`` assignments of a Python file, without running it."""
    try:
        tree = ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise OfficialAssetsError(f"cannot read {module}: {exc}. {WHERE_TO_GET}") from exc
    found: dict[str, str] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        value = getattr(node, "value", None)
        for t in targets:
            if isinstance(t, ast.Name) and t.id in names and value is not None:
                try:
                    literal = ast.literal_eval(value)
                except ValueError:
                    continue
                if isinstance(literal, str):
                    found[t.id] = literal
    return found


def _mtimes(folder: Path) -> tuple:
    files = [folder / PROMPT_MODULE, *sorted((folder / SKILLS_DIR).glob("*.md"))]
    return tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())


def _is_ours(folder: Path) -> bool:
    """Our own package is also called ``genevolve``; never mistake it for the official one."""
    return (folder / "profiles.py").is_file() and (folder / "official").is_dir()


def _installed_copies() -> list[Path]:
    """Package folders of installed distributions that ship ``genevolve/system_prompt.py``."""
    from importlib import metadata

    out = []
    try:
        dists = list(metadata.distributions())
    except Exception:  # noqa: BLE001 - a broken environment just means: none found
        return out
    for dist in dists:
        for f in dist.files or ():
            if str(f).replace("\\", "/").endswith(f"genevolve/{PROMPT_MODULE}"):
                out.append(Path(dist.locate_file(f)).parent)
    return out
