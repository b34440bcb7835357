"""`genevolve run` as a user runs it: a subprocess, offline, JSON out, no renderer."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_run_offline_json(tmp_path):
    env = dict(os.environ, GENEVOLVE_HOME=str(tmp_path / "home"), GENEVOLVE_OFFLINE="1")
    # Rank library images by BM25 only, so the test does not wait for the embedding model.
    (tmp_path / "settings.json").write_text(json.dumps({"extra": {"library_embeddings": False}}))
    request = 'A poster of the Eiffel Tower with the title "PARIS", two cats in front'
    proc = subprocess.run(
        [sys.executable, "-m", "genevolve.cli", "run", request, "--offline", "--json", "--renderer", "none",
         "--config", str(tmp_path / "settings.json"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    summary = result["summary"]
    assert result["offline"] is True and result["image"] is None
    assert summary["termination"] == "answer" and summary["request"] == request
    assert summary["backends"]["policy"] == "planner"
    assert any(k.startswith("tool:") for k in summary["backends"])
    program = summary["program"]
    assert '"PARIS"' in program["gen_prompt"]
    assert {"kind": "text", "text": "PARIS"}.items() <= program["constraints"][0].items()
    assert {"text_rendering", "quantity_counting"} <= set(summary["skills"])
    saved = json.loads((tmp_path / "out" / "program.json").read_text())
    assert saved["gen_prompt"] == program["gen_prompt"]
    assert (tmp_path / "home" / "genevolve.db").is_file()


def test_run_with_a_bad_policy_spec_is_a_clean_error(tmp_path):
    env = dict(os.environ, GENEVOLVE_HOME=str(tmp_path / "home"), GENEVOLVE_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "genevolve.cli", "run", "x", "--offline", "--json", "--renderer", "none",
         "--policy", "replay:/no/such/file.jsonl"],
        capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "replay file not found" in proc.stderr


def test_a_system_prompt_file_replaces_ours_and_a_missing_one_is_named(tmp_path):
    env = dict(os.environ, GENEVOLVE_HOME=str(tmp_path / "home"), GENEVOLVE_OFFLINE="1")
    (tmp_path / "settings.json").write_text(json.dumps({"extra": {"library_embeddings": False}}))
    prompt = tmp_path / "house_style.md"
    prompt.write_text("You plan images for the house style guide. Answer in the protocol.")
    base = [sys.executable, "-m", "genevolve.cli", "run", "a red bicycle", "--offline", "--json",
            "--renderer", "none", "--config", str(tmp_path / "settings.json")]
    proc = subprocess.run(base + ["--system-prompt", str(prompt), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    messages = json.loads((tmp_path / "out" / "trajectory.json").read_text())["messages"]
    assert messages[0] == {"role": "system", "content": prompt.read_text()}
    proc = subprocess.run(base + ["--system-prompt", str(tmp_path / "missing.md")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and "missing.md" in proc.stderr + proc.stdout


def _run_cli(args, tmp_path, timeout=300):
    env = dict(os.environ, GENEVOLVE_HOME=str(tmp_path / "home"), GENEVOLVE_OFFLINE="1")
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"extra": {"library_embeddings": False}}))
    return subprocess.run([sys.executable, "-m", "genevolve.cli", *args, "--config", str(settings)],
                          capture_output=True, timeout=timeout, env=env)


def test_a_request_with_invalid_utf8_is_saved_rendered_and_kept_byte_for_byte(tmp_path):
    from genevolve.store import Store

    # Bytes, as a shell passes $'a poster \xff\xfe': Python sees lone surrogates.
    proc = _run_cli(["run", b'a poster \xff\xfe, title "SALE"', "--offline", "--out", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert b"Traceback" not in proc.stderr and b"render failed" not in proc.stdout
    request = 'a poster \udcff\udcfe, title "SALE"'
    saved = json.loads((tmp_path / "out" / "trajectory.json").read_text(encoding="utf-8"))
    assert saved["request"] == request
    assert (tmp_path / "out" / "image.png").is_file()
    runs = Store(tmp_path / "home" / "genevolve.db").list_runs()
    assert len(runs) == 1
    assert Store(tmp_path / "home" / "genevolve.db").get_trajectory(runs[0]["id"]).request == request


def test_a_failed_save_is_reported_as_an_error_not_as_saved(tmp_path):
    import sqlite3

    from genevolve.store import Store

    db = tmp_path / "home" / "genevolve.db"
    Store(db)  # the schema, then a real SQLite failure on every insert (as a full disk gives)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON runs BEGIN SELECT RAISE(FAIL, 'disk is full'); END")
    proc = _run_cli(["run", "a red bicycle", "--offline", "--renderer", "none", "--out", str(tmp_path / "out")],
                    tmp_path)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 1, err[-2000:]  # an environment fault, not bad input
    assert "saved to" not in out
    assert "NOT saved" in err and "disk is full" in err and str(tmp_path / "out" / "trajectory.json") in err
    assert "Traceback" not in err
    assert json.loads((tmp_path / "out" / "trajectory.json").read_text())["request"] == "a red bicycle"


def test_an_empty_or_quotes_only_request_is_refused_with_exit_2(tmp_path):
    for request in ["", "  ", '""', "' '"]:
        proc = _run_cli(["run", request, "--offline", "--renderer", "none"], tmp_path)
        err = proc.stderr.decode()
        assert proc.returncode == 2 and "request is empty" in err and "Traceback" not in err, (request, err)
        assert len(err.strip().splitlines()) == 1
