"""``diffusers:<id-or-path>`` — any diffusers pipeline as a renderer.

Text-to-image pipelines load through AutoPipelineForText2Image; when the program carries
references, the same components are reused for image-to-image (AutoPipelineForImage2Image
.from_pipe, no second load). A QwenImageEditPlus checkpoint gets every reference image at once,
which is what that model was trained for. torch and diffusers are imported here only.

Options ride on the spec as a query string:
``diffusers:Qwen/Qwen-Image-Edit-2509?steps=40&offload=1&dtype=bfloat16&device=cuda:0``
(steps, guidance, true_cfg, strength, dtype, device, offload=model|sequential|1|0, negative).
"""

from __future__ import annotations

import inspect
import json
import os
import threading
import warnings
from pathlib import Path
from dataclasses import dataclass

from PIL import Image

from genevolve.program import Program
from genevolve.renderers.base import (
    Progress, Renderer, RenderError, as_program, check_size, default_size, fit_exact, load_references, round_to,
)
from genevolve.specs import Spec, env_flag, param, read_flag, read_options

QWEN_EDIT_PLUS = "QwenImageEditPlusPipeline"
DEFAULT_NEGATIVE = "blurry, low quality, distorted text, watermark"


@dataclass
class DiffusersOptions:
    """What a ``diffusers:`` spec takes after ``?``."""

    steps: int | None = param(None, "Denoising steps (default: the pipeline's).")
    guidance: float | None = param(None, "guidance_scale.")
    true_cfg: float | None = param(None, "true_cfg_scale (Qwen-Image).")
    strength: float = param(0.75, "Image-to-image strength when the program has references.")
    dtype: str | None = param(None, "float32 | float16 | bfloat16 (default: by device).")
    device: str | None = param(None, "cuda, cuda:1, mps or cpu (default: the best there is).")
    offload: str | None = param(None, "model | sequential | 1 (model) | 0 (none).")
    negative: str | None = param(None, "Negative prompt.")


def _pipeline_class_name(model: str) -> str | None:
    """The ``_class_name`` in model_index.json, read without loading anything heavy."""
    local = Path(model).expanduser()
    index = local / "model_index.json"
    if not index.is_file():
        try:
            from huggingface_hub import hf_hub_download

            index = Path(hf_hub_download(model, "model_index.json"))
        except Exception:  # noqa: BLE001 - offline or a private repo: let from_pretrained explain
            return None
    try:
        return json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError):
        return None


def _hub_offline() -> bool:
    """Downloads are off: HF_HUB_OFFLINE (as huggingface_hub reads it) or GENEVOLVE_OFFLINE."""
    if env_flag("GENEVOLVE_OFFLINE"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return env_flag("HF_HUB_OFFLINE")


class DiffusersRenderer(Renderer):
    generative = True

    def __init__(self, model: str, *, steps: int | None = None, guidance_scale: float | None = None,
                 true_cfg_scale: float | None = None, strength: float = 0.75, dtype: str | None = None,
                 device: str | None = None, offload: str | None = None, negative_prompt: str | None = None):
        self.model = model
        self.name = f"diffusers:{model}"
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.true_cfg_scale = true_cfg_scale
        self.strength = strength
        self.dtype_name = dtype
        self.device_name = device
        # GENEVOLVE_DIFFUSERS_OFFLOAD=model|sequential turns offload on for every spec (small GPUs).
        self.offload = offload if offload is not None else (os.environ.get("GENEVOLVE_DIFFUSERS_OFFLOAD") or None)
        self.negative_prompt = DEFAULT_NEGATIVE if negative_prompt is None else negative_prompt
        self._t2i = None
        self._i2i = None
        self._lock = threading.Lock()
        self.class_name: str | None = None
        self.last_info: dict = {}

    @classmethod
    def from_spec(cls, spec: Spec) -> "DiffusersRenderer":
        """From a parsed ``diffusers:<id-or-path>[?steps=N&…]`` spec (options: ``DiffusersOptions``)."""
        o = read_options(DiffusersOptions, spec.params, backend="diffusers", error=RenderError)
        flag = read_flag(o.offload)  # offload=1 means model offload, offload=0 none
        offload = o.offload if flag is None else ("model" if flag else None)
        return cls(spec.target, steps=o.steps, guidance_scale=o.guidance, true_cfg_scale=o.true_cfg,
                   strength=o.strength, dtype=o.dtype, device=o.device, offload=offload, negative_prompt=o.negative)

    # ------------------------------------------------------------ loading

    def _device_and_dtype(self):
        import torch

        device = self.device_name
        if not device:
            if torch.cuda.is_available():
                device = "cuda"
            elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
                device = "mps"
            else:
                device = "cpu"
        if self.dtype_name:
            dtype = getattr(torch, self.dtype_name, None)
            if not isinstance(dtype, torch.dtype):
                raise RenderError(f"unknown dtype {self.dtype_name!r}; use float32, float16 or bfloat16")
        elif device.startswith("cuda"):
            # bf16 where the GPU has it (Ampere and later): fp16 overflows in large DiT models.
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif device == "mps":
            dtype = torch.float16
        else:
            dtype = torch.float32  # CPU half precision is slow or unsupported for many ops
        return device, dtype

    def preflight(self, offline: bool | None = None) -> None:
        """Fail in milliseconds (not after a minute of imports and hub retries) when the weights
        cannot be had: a missing folder, or a hub id that is neither cached nor downloadable offline."""
        local = Path(self.model).expanduser()
        if local.exists():
            if not (local / "model_index.json").is_file():
                raise RenderError(f"{local} is not a diffusers pipeline folder (no model_index.json in it)")
            return
        if self.model.startswith((".", "/", "~")) or self.model.count("/") > 1:
            raise RenderError(f"no such folder: {local}. Give a folder with model_index.json, or a hub id like "
                              "Qwen/Qwen-Image-Edit")
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(self.model, "model_index.json")
        except Exception:  # noqa: BLE001 - an invalid repo id: from_pretrained explains it
            return
        if isinstance(cached, str):
            return
        if offline is None:
            offline = _hub_offline()
        if offline:
            raise RenderError(
                f"the weights of {self.model} are not on this machine, and downloads are off (offline). "
                f"Download them once with `hf download {self.model}` (pip install huggingface_hub; set HF_HOME to "
                f"choose where), or point the renderer at a local copy: diffusers:/path/to/folder")

    def load(self):
        if self._t2i is not None:
            return self._t2i
        self.preflight()
        try:
            import torch  # noqa: F401
            import diffusers
        except ImportError as exc:
            raise RenderError("the diffusers renderer needs torch and diffusers: pip install -r requirements.txt") from exc
        device, dtype = self._device_and_dtype()
        self.class_name = _pipeline_class_name(self.model)
        if self.class_name == QWEN_EDIT_PLUS and not hasattr(diffusers, QWEN_EDIT_PLUS):
            raise RenderError(f"{self.model} needs {QWEN_EDIT_PLUS}; upgrade diffusers (>= 0.36)")
        loader = getattr(diffusers, QWEN_EDIT_PLUS) if self.class_name == QWEN_EDIT_PLUS else diffusers.AutoPipelineForText2Image
        try:
            with warnings.catch_warnings():
                # diffusers 0.42 renames torch_dtype to dtype; the old name works on every version we allow.
                warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
                pipe = loader.from_pretrained(self.model, torch_dtype=dtype)
        except (OSError, ValueError) as exc:
            raise RenderError(f"could not load diffusers pipeline {self.model!r}: {exc}. Give a local folder "
                              f"with model_index.json or a hub id you have downloaded (HF_HUB_OFFLINE may be set)") from exc
        if self.offload == "sequential" and device != "cpu":
            pipe.enable_sequential_cpu_offload(device=device)
        elif self.offload and device != "cpu":
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        self._t2i = pipe
        self.class_name = type(pipe).__name__
        self.device, self.dtype = device, dtype
        return pipe

    def _image_pipeline(self):
        """The pipeline for reference-conditioned renders (shares the loaded components)."""
        pipe = self.load()
        if self.class_name == QWEN_EDIT_PLUS:
            return pipe
        if self._i2i is None:
            from diffusers import AutoPipelineForImage2Image

            try:
                self._i2i = AutoPipelineForImage2Image.from_pipe(pipe)
                if hasattr(self._i2i, "set_progress_bar_config"):
                    self._i2i.set_progress_bar_config(disable=True)
            except (ValueError, KeyError):
                self._i2i = False  # no image-to-image variant: references cannot steer this model
        return self._i2i or None

    # ------------------------------------------------------------ rendering

    def render(self, program: Program, size: tuple[int, int] | None = None, seed: int = 0,
               progress: Progress | None = None, *, steps: int | None = None, guidance_scale: float | None = None,
               true_cfg_scale: float | None = None, negative_prompt: str | None = None) -> Image.Image:
        import torch

        program = as_program(program)
        refs = load_references(program)
        asked = check_size(size) if size else None
        # Latent models need sides divisible by their VAE factor times the patch size; 16 covers
        # SD/SDXL/Flux/Qwen. A size that is not is rendered rounded, then fitted exactly.
        w, h = (round_to(asked[0]), round_to(asked[1])) if asked else default_size(program, [r.size for r in refs])
        pipe = self.load()
        call = pipe
        kwargs: dict = {"prompt": program.gen_prompt or "a poster"}
        warnings = []
        if refs:
            if self.class_name == QWEN_EDIT_PLUS:
                kwargs["image"] = refs
            else:
                i2i = self._image_pipeline()
                if i2i is None:
                    warnings.append(f"{self.class_name} has no image-to-image variant; references ignored")
                else:
                    call = i2i
                    kwargs["image"] = refs[0].resize((w, h), Image.Resampling.LANCZOS)
                    kwargs["strength"] = self.strength
                    if len(refs) > 1:
                        warnings.append("only the first reference conditions an image-to-image pipeline")
        total = steps or self.steps or (40 if self.class_name == QWEN_EDIT_PLUS else 30)
        kwargs.update({"width": w, "height": h, "num_inference_steps": total,
                       "generator": torch.Generator(device="cpu").manual_seed(int(seed)),
                       "negative_prompt": self.negative_prompt if negative_prompt is None else negative_prompt})
        g = guidance_scale if guidance_scale is not None else self.guidance_scale
        if g is not None:
            kwargs["guidance_scale"] = g
        tc = true_cfg_scale if true_cfg_scale is not None else self.true_cfg_scale
        if tc is not None or self.class_name == QWEN_EDIT_PLUS:
            kwargs["true_cfg_scale"] = 4.0 if tc is None else tc
        params = inspect.signature(call.__call__).parameters
        if progress is not None and "callback_on_step_end" in params:
            # img2img runs only strength * steps denoising steps; report against what will run.
            expected = int(total * kwargs.get("strength", 1.0)) or total

            def on_step_end(_pipe, step, _timestep, cb_kwargs):
                progress(min(step + 1, expected), expected)
                return cb_kwargs

            kwargs["callback_on_step_end"] = on_step_end
        # Only what this pipeline declares (img2img has no width/height: it follows its input).
        kwargs = {k: v for k, v in kwargs.items() if k in params}
        # A pipeline holds per-call state (scheduler timesteps): one call at a time per renderer.
        with self._lock, torch.inference_mode():
            out = call(**kwargs)
        image = out.images[0]
        if not isinstance(image, Image.Image):
            raise RenderError(f"{self.class_name} returned {type(image).__name__}, not an image")
        image = image.convert("RGB")
        final = asked or (w, h)
        image = fit_exact(image, final)
        self.last_info = {"pipeline": type(call).__name__, "steps": total, "device": self.device,
                          "dtype": str(self.dtype).replace("torch.", ""), "generated_size": [w, h],
                          "references_used": len(refs) if "image" in kwargs else 0}
        if warnings:
            self.last_info["backend_warnings"] = warnings
        return image

    def describe(self) -> dict:
        return {"model": self.model, **self.last_info}

