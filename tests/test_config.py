"""Backend spec strings and settings layering."""

from __future__ import annotations

import pytest

from genevolve.config import Settings
from genevolve.specs import parse_spec


@pytest.mark.parametrize("spec, kind, target, base_url, params", [
    ("planner", "planner", "", None, {}),
    ("nano", "nano", "", None, {}),
    ("nano?4bit=1", "nano", "", None, {"4bit": "1"}),
    ("hf:/models/x?4bit=1&adapter=/a", "hf", "/models/x", None, {"4bit": "1", "adapter": "/a"}),
    ("openai:genevolve@http://127.0.0.1:8000/v1", "openai", "genevolve", "http://127.0.0.1:8000/v1", {}),
    ("replay:turns.jsonl", "replay", "turns.jsonl", None, {}),
])
def test_parse_spec(spec, kind, target, base_url, params):
    s = parse_spec(spec)
    assert (s.kind, s.target, s.base_url, s.params) == (kind, target, base_url, params)


def test_renderer_specs_reach_the_backend_through_make_renderer(monkeypatch):
    """Renderer specs are parsed by make_renderer (not parse_spec): check what the backend gets."""
    from genevolve.renderers import make_renderer
    from genevolve.renderers.diffusers import DiffusersRenderer
    from genevolve.renderers.service import ServiceRenderer

    monkeypatch.delenv("GENEVOLVE_DIFFUSERS_OFFLOAD", raising=False)
    r = make_renderer("diffusers:/m/sd?steps=4&guidance=2.5&true_cfg=3&dtype=float32&offload=1&negative=blur")
    assert isinstance(r, DiffusersRenderer) and r.name == "diffusers:/m/sd"
    assert (r.model, r.steps, r.guidance_scale, r.true_cfg_scale, r.dtype_name, r.offload, r.negative_prompt) == (
        "/m/sd", 4, 2.5, 3.0, "float32", "model", "blur")
    r = make_renderer("diffusers:org/model")
    assert (r.model, r.steps, r.offload) == ("org/model", None, None)
    s = make_renderer("service:http://a:1/, http://b:2")
    assert isinstance(s, ServiceRenderer) and s.urls == ["http://a:1", "http://b:2"]


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
