"""The package's floors hold: import-linter checks the contracts in pyproject.toml.

Every import counts, at module level or inside a function: a lazy import that climbs a floor is
still an arrow back up. docs/architecture.md describes the floors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("importlinter")


def _lint(root: Path) -> subprocess.CompletedProcess:
    """lint-imports on the packages under ``root`` (its own process, so that copy is what it reads)."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def _floors() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (floors,) = [c for c in config["contracts"] if c["id"] == "floors"]
    return floors["layers"]


def test_every_contract_is_kept():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_every_room_has_a_floor():
    rooms = {p.stem for p in (REPO / "genevolve").iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    placed = {name.strip() for floor in _floors() for name in floor.split("|")}
    assert rooms == placed, {"without a floor": rooms - placed, "not a room": placed - rooms}


def test_an_import_inside_a_function_that_climbs_a_floor_breaks_the_contract(tmp_path):
    # A copy of the package whose program module (a foundation) reaches up to the agent lazily:
    # the check must see it, or the test above could never fail.
    for package in ("genevolve", "app"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.md",
                                                                                       "*.jsonl", "*.png"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    program = tmp_path / "genevolve" / "program.py"
    program.write_text(program.read_text() + "\n\ndef _climb():\n    from genevolve.agent import Agent\n\n"
                       "    return Agent\n")
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout[-4000:]
    assert "BROKEN" in result.stdout and "genevolve.program -> genevolve.agent" in result.stdout
