"""``diffusers:<path>`` on a tiny random pipeline built offline: real loading, real sampling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from helpers.tiny_diffusers import shared_tiny_sd

from genevolve.program import Constraint, Program, Reference
from genevolve.renderers import RenderError, make_renderer, render_with_report
from genevolve.renderers.base import default_size
from genevolve.renderers.diffusers import QWEN_EDIT_PLUS, _pipeline_class_name

PHOTOS = Path(skimage.data.__file__).parent


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    return shared_tiny_sd(tmp_path_factory)


@pytest.fixture(scope="module")
def renderer(tiny_sd):
    return make_renderer(f"diffusers:{tiny_sd}?steps=2&guidance=1.5")


PROMPT = Program(gen_prompt='a red fox poster titled "FOX"', constraints=[Constraint(kind="text", text="FOX")])


def test_renders_the_asked_size_with_progress_and_a_report(renderer):
    steps = []
    image, report = render_with_report(renderer, PROMPT, size=(96, 64), seed=1,
                                       progress=lambda done, total: steps.append((done, total)))
    assert image.size == (96, 64)
    assert steps == [(1, 2), (2, 2)]
    assert report["backend"].startswith("diffusers:") and report["pipeline"] == "StableDiffusionPipeline"
    assert (report["width"], report["height"], report["seed"], report["steps"]) == (96, 64, 1, 2)
    assert report["device"] == "cpu" and report["dtype"] == "float32"
    # The image is the model's output, not a blank canvas.
    assert np.asarray(image).std() > 1


def test_sizes_off_the_16_grid_are_generated_rounded_then_fitted_exactly(renderer):
    image, report = render_with_report(renderer, PROMPT, size=(100, 72), seed=0)
    assert image.size == (100, 72)
    assert all(v % 16 == 0 for v in report["generated_size"])


def test_seed_controls_the_sample(renderer):
    a = np.asarray(renderer.render(PROMPT, size=(64, 64), seed=5))
    b = np.asarray(renderer.render(PROMPT, size=(64, 64), seed=5))
    c = np.asarray(renderer.render(PROMPT, size=(64, 64), seed=6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_references_switch_to_image_to_image(renderer):
    prog = Program(gen_prompt="the first reference image as a watercolour",
                   reference_images=[Reference(img_id="IMG_001", path=str(PHOTOS / "coffee.png"))])
    image, report = render_with_report(renderer, prog, size=(80, 64), seed=0)
    assert image.size == (80, 64)
    assert report["pipeline"] == "StableDiffusionImg2ImgPipeline" and report["references_used"] == 1


def test_typeset_stage_runs_after_a_generative_render(renderer):
    image, report = render_with_report(renderer, PROMPT, size=(96, 64), seed=0, typeset=True)
    assert report["typeset"] is True and report["typeset_region"] in ("top", "bottom", "left", "right")
    assert image.size == (96, 64)


def test_default_size_follows_the_first_reference_on_the_16_grid():
    prog = Program(gen_prompt="x", reference_images=[Reference(img_id="IMG_001", path="unused")])
    w, h = default_size(prog, [(640, 480)])
    assert w % 16 == 0 and h % 16 == 0 and abs(w / h - 4 / 3) < 0.03 and 0.9e6 < w * h < 1.1e6


def test_qwen_edit_plus_is_recognised_from_model_index(tmp_path):
    import diffusers

    assert hasattr(diffusers, QWEN_EDIT_PLUS)  # the installed diffusers has the multi-reference editor
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": QWEN_EDIT_PLUS}))
    assert _pipeline_class_name(str(tmp_path)) == QWEN_EDIT_PLUS


def test_a_missing_model_is_a_clear_error(tmp_path):
    r = make_renderer(f"diffusers:{tmp_path / 'no-such-model'}")
    with pytest.raises(RenderError, match="no such folder: .*no-such-model. Give a folder with model_index.json"):
        r.render(PROMPT, size=(64, 64))
    with pytest.raises(RenderError, match="needs a model id"):
        make_renderer("diffusers:")


def test_importing_renderers_stays_light():
    code = ("import sys, genevolve.renderers, genevolve.renderers.layout, genevolve.judges.verify; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'fastapi') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_missing_weights_fail_fast_with_how_to_get_them(tmp_path):
    """Offline (tests set GENEVOLVE_OFFLINE), a hub id in no cache fails in milliseconds, not after
    a minute of imports and hub retries, and says how to get the weights."""
    import time

    t0 = time.perf_counter()
    with pytest.raises(RenderError, match="hf download someone/not-here"):
        make_renderer("diffusers:someone/not-here").load()
    assert time.perf_counter() - t0 < 5
    with pytest.raises(RenderError, match="no model_index.json"):
        make_renderer(f"diffusers:{tmp_path}").preflight()
    with pytest.raises(RenderError, match="no such folder"):
        make_renderer(f"diffusers:{tmp_path}/nothing/here").preflight()
