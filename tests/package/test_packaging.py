"""Packaging: pyproject declares what the code needs, and requirements.txt stays in step."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    """The normalised distribution name of one requirement line."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)).lower()


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_requirements_txt_and_pyproject_list_the_same_packages():
    project = _pyproject()
    declared = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {_name(r) for r in extra if _name(r) != "genevolve"}
    lines = [ln.split("#", 1)[0].strip() for ln in (REPO / "requirements.txt").read_text().splitlines()]
    listed = {_name(ln) for ln in lines if ln}
    assert declared == listed, {"only in pyproject": declared - listed, "only in requirements.txt": listed - declared}
    assert "torch==2.13.0" in lines  # the CPU wheel on disk; an unpinned torch pulls the CUDA build


# Run as a subprocess: every import whose distribution is outside the core dependencies (and
# what they pull in) fails, as it would after `pip install genevolve` with no extras.
CORE_ONLY = r"""
import importlib.abc, importlib.metadata as md, json, re, sys
from packaging.requirements import Requirement

core = json.loads(sys.argv[1])
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
allowed, todo = set(), [norm(n) for n in core]
while todo:
    name = todo.pop()
    if name in allowed:
        continue
    allowed.add(name)
    try:
        requires = md.requires(name) or []
    except md.PackageNotFoundError:
        continue
    for line in requires:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(norm(req.name))
owners = md.packages_distributions()

class CoreOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "genevolve":
            return None
        dists = {norm(d) for d in owners.get(top, [])}
        if dists and not dists & allowed:
            raise ModuleNotFoundError(f"No module named {name!r} (not a core dependency)", name=name)
        return None

sys.meta_path.insert(0, CoreOnly())
sys.argv = ["genevolve"] + sys.argv[2:]
from genevolve.cli import main
main()
"""


def test_the_core_dependencies_run_the_offline_planner_render_and_verify(tmp_path):
    core = [_name(r) for r in _pyproject()["dependencies"]]
    env = dict(os.environ, GENEVOLVE_HOME=str(tmp_path / "home"), GENEVOLVE_OFFLINE="1", PYTHONPATH=str(REPO))
    request = 'A travel poster of Paris at dusk, title "PARIS"'
    proc = subprocess.run([sys.executable, "-c", CORE_ONLY, json.dumps(core), "run", request, "--offline", "--json",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["summary"]["termination"] == "answer"
    assert result["verification"]["constraints"][0]["text"] == "PARIS"
    assert (tmp_path / "out" / "image.png").is_file()
    # The blocker itself works: a heavy backend is refused with a clear message, not a traceback.
    proc = subprocess.run([sys.executable, "-c", CORE_ONLY, json.dumps(core), "run", "a red kite", "--offline",
                           "--policy", "nano", "--renderer", "none"], capture_output=True, text=True, timeout=300, env=env)
    said = (proc.stderr + proc.stdout).replace("\n", " ")
    assert proc.returncode == 2 and "error:" in said and "pip install" in said and "Traceback" not in said, said
