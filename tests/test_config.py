"""Backend spec strings and settings layering."""

from __future__ import annotations

import pytest

from genevolve.config import Settings, parse_spec


@pytest.mark.parametrize("spec, kind, target, base_url, params", [
    ("planner", "planner", "", None, {}),
    ("nano", "nano", "", None, {}),
    ("nano?4bit=1", "nano", "", None, {"4bit": "1"}),
    ("hf:/models/x?4bit=1&adapter=/a", "hf", "/models/x", None, {"4bit": "1", "adapter": "/a"}),
    ("openai:genevolve@http://127.0.0.1:8000/v1", "openai", "genevolve", "http://127.0.0.1:8000/v1", {}),
    ("replay:turns.jsonl", "replay", "turns.jsonl", None, {}),
    ("diffusers:/m/sd", "diffusers", "/m/sd", None, {}),
])
def test_parse_spec(spec, kind, target, base_url, params):
    s = parse_spec(spec)
    assert (s.kind, s.target, s.base_url, s.params) == (kind, target, base_url, params)


def test_empty_spec_is_an_error():
    with pytest.raises(ValueError):
        parse_spec("  ")


def test_environment_overrides_defaults_and_arguments_override_both(monkeypatch, tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("policy: replay:a.jsonl\nmax_rounds: 5\n")
    monkeypatch.setenv("GENEVOLVE_MAX_ROUNDS", "7")
    s = Settings.load(cfg)
    assert s.policy == "replay:a.jsonl" and s.max_rounds == 7
    assert Settings.load(cfg, max_rounds=3).max_rounds == 3


def test_unknown_setting_is_named(tmp_path):
    cfg = tmp_path / "s.json"
    cfg.write_text('{"polcy": "planner"}')
    with pytest.raises(ValueError, match="polcy"):
        Settings.load(cfg)
