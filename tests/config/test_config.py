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
    """Renderer specs reach the backend through make_renderer: check what the backend gets."""
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


def test_spec_options_are_typed_and_a_bad_key_or_value_is_named():
    from genevolve.policies.local import LocalOptions
    from genevolve.specs import read_options

    opts = read_options(LocalOptions, parse_spec("hf:/m?4bit=yes&adapter=/a&temperature=0.3").params, backend="hf")
    assert (opts.four_bit, opts.adapter, opts.gguf, opts.temperature, opts.top_p) == (True, "/a", None, 0.3, None)
    assert opts.given() == {"temperature": 0.3}
    assert read_options(LocalOptions, {"4bit": "off"}, backend="nano").four_bit is False
    with pytest.raises(ValueError, match=r"unknown hf option\(s\) 4-bit; accepted: .*4bit.*adapter"):
        read_options(LocalOptions, {"4-bit": "1"}, backend="hf")
    with pytest.raises(ValueError, match=r"hf option 4bit='maybe' is not a flag"):
        read_options(LocalOptions, {"4bit": "maybe"}, backend="hf")
    with pytest.raises(ValueError, match=r"max_tokens='lots' is not a whole number"):
        read_options(LocalOptions, {"max_tokens": "lots"}, backend="hf")


@pytest.mark.parametrize("family, spec, match", [
    ("policy", "planner?fast=1", r"unknown planner option\(s\) fast; accepted: verdicts"),
    ("policy", "replay:x.jsonl?record=3", r"unknown replay option\(s\) record; accepted: id"),
    ("renderer", "diffusers:/m/sd?stepz=4", r"unknown diffusers option\(s\) stepz; accepted: steps"),
    ("renderer", "diffusers:/m/sd?steps=four", r"diffusers option steps='four' is not a whole number"),
    ("renderer", "gemini:gemini-2.5-flash-image?fast=1", r"unknown gemini option"),
    ("judge", "kscore:m@http://127.0.0.1:9/v1?rpn=30", r"unknown kscore option\(s\) rpn; accepted: timeout, retries, rpm"),
    ("judge", "wise:m@http://127.0.0.1:9/v1?timeout=soon", r"wise option timeout='soon' is not a number"),
])
def test_every_backend_family_refuses_an_option_it_does_not_take(family, spec, match):
    from genevolve.judges import make_judge
    from genevolve.policies import make_policy
    from genevolve.renderers import RenderError, make_renderer

    build, error = {"policy": (make_policy, ValueError), "renderer": (make_renderer, RenderError),
                    "judge": (make_judge, ValueError)}[family]
    with pytest.raises(error, match=match):
        build(spec)


def test_judge_spec_options_reach_the_endpoint():
    from genevolve.judges import make_judge

    judge = make_judge("kscore:m@http://127.0.0.1:9/v1?timeout=7&retries=2&max_tokens=99&image_side=512",
                       settings=Settings())
    ep = judge.endpoint
    assert (ep.base_url, ep.timeout_s, ep.max_retries, ep.max_tokens, judge.max_side) == (
        "http://127.0.0.1:9/v1", 7.0, 2, 99, 512)


@pytest.mark.parametrize("word, flag", [("1", True), ("Yes", True), (" on ", True), ("TRUE", True),
                                        ("0", False), ("no", False), ("off", False), ("maybe", None), ("", None)])
def test_flag_words(word, flag, monkeypatch):
    from genevolve.specs import env_flag, is_true, read_flag

    assert read_flag(word) is flag and is_true(word) is (flag is True)
    monkeypatch.setenv("GENEVOLVE_TEST_FLAG", word)
    assert env_flag("GENEVOLVE_TEST_FLAG") is (flag is True)


@pytest.mark.parametrize("spec, kind", [("hf:/m?4bit=1", "hf"), ("nano?adapter=none", "nano"), ("  ", ""), (None, ""),
                                        ("Diffusers:org/m", "diffusers"), ("openai:m@http://h/v1", "openai")])
def test_spec_kind(spec, kind):
    from genevolve.specs import spec_kind

    assert spec_kind(spec) == kind
