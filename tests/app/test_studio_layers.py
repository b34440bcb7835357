"""The studio's layers: a tab depends on the generate service, the form schema and the small shared
modules of app/, never on another tab; only app/studio.py (which lays the tabs out) imports tabs
or the studio. Read from the source, so an import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"


def _imported_app_modules(path: Path) -> set[str]:
    """Every ``app.<module>`` a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("app.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "app":  # from app import a, b
                found |= {f"app.{alias.name}" for alias in node.names}
            elif node.module.startswith("app."):
                found.add(node.module)
    return {name.split(".")[1] for name in found}


def _tabs_and_studio_imported_by(path: Path) -> set[str]:
    return {m for m in _imported_app_modules(path) if m.endswith("_tab") or m == "studio"}


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    sample = tmp_path / "x_tab.py"
    sample.write_text("import app.markup\n\ndef f():\n    from app.generate_tab import thing\n"
                      "    from app import judge_tab, sessions\n    import app.studio\n")
    assert _tabs_and_studio_imported_by(sample) == {"generate_tab", "judge_tab", "studio"}


def test_no_tab_imports_another_tab_or_the_studio():
    tabs = sorted(APP.glob("*_tab.py"))
    assert len(tabs) >= 6, "the studio's tabs are app/*_tab.py"
    offenders = {p.name: sorted(_tabs_and_studio_imported_by(p) - {p.stem}) for p in tabs}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_studio_module_assembles_tabs():
    shared = [p for p in APP.glob("*.py") if not p.stem.endswith("_tab") and p.stem != "studio"]
    offenders = {p.name: sorted(_tabs_and_studio_imported_by(p)) for p in shared}
    assert {k: v for k, v in offenders.items() if v} == {}
