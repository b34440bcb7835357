"""Runs many `genevolve` command lines in one process, as the console script does, and reports each.

Fault tests have hundreds of bad inputs; a fresh interpreter per case would cost seconds each. Every
case still goes through ``genevolve.cli.main`` (argument parsing, checks, the one error path) with
its own environment overrides, stdin closed. Input: a JSON list of {"argv": [...], "env": {...}} on
stdin; output: a JSON list of {"code", "stdout", "stderr"}.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys


def run_one(argv: list[str], env: dict) -> dict:
    from genevolve import cli
    from genevolve.config import web_reachable

    saved = dict(os.environ)
    os.environ.update(env)
    web_reachable.cache_clear()
    out, err = io.StringIO(), io.StringIO()
    code = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException as exc:  # noqa: BLE001 - a crash that escapes main is the finding
                import traceback

                err.write("Traceback (escaped main)\n" + traceback.format_exc())
                code = -1
    finally:
        os.environ.clear()
        os.environ.update(saved)
        cli._DEBUG["on"] = False
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main() -> None:
    cases = json.load(sys.stdin)
    results = [run_one(c["argv"], c.get("env") or {}) for c in cases]
    sys.stdout.write(json.dumps(results))


if __name__ == "__main__":
    main()
