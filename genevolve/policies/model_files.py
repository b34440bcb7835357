"""Finding, converting and loading local model files for ``LocalPolicy``.

Kept apart from the policy so the training code and tests can load exactly what the policy loads.
Everything heavy is imported inside the functions.
"""

from __future__ import annotations

import os
from pathlib import Path

from genevolve.specs import env_flag


def model_cache_dir() -> Path:
    """Where converted models live: shared by tests and runs, so not under GENEVOLVE_HOME."""
    root = os.environ.get("GENEVOLVE_MODEL_CACHE") or Path.home() / ".cache" / "genevolve" / "models"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_image_text_processor(path: str | Path, **kwargs):
    """AutoProcessor, or — where torchvision is missing — the same processor without its video part.

    transformers builds video processors on torchvision; without it a Qwen3-VL processor refuses to
    construct at all, although images need only the PIL image processor. We only ever send images.
    """
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path, **kwargs)
    except (AttributeError, ImportError, ValueError, TypeError) as first_error:
        try:
            import torchvision  # noqa: F401
        except ImportError:
            pass
        else:
            raise first_error
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    import transformers

    config = AutoConfig.from_pretrained(path, **kwargs)
    name = PROCESSOR_MAPPING_NAMES.get(config.model_type)
    base = getattr(transformers, name)

    class ImageOnlyProcessor(base):  # type: ignore[misc, valid-type]
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    ImageOnlyProcessor.__name__ = base.__name__
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    image_processor = AutoImageProcessor.from_pretrained(path, **kwargs)
    return ImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                              chat_template=getattr(tokenizer, "chat_template", None))


def resolve_model_path(model_id: str) -> Path:
    """A local directory for ``model_id``: the path itself, or the hub snapshot (downloaded if allowed).

    Without the files and without network, one line says what to download and where to put it.
    """
    path = Path(model_id).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            from genevolve.policies.base import PolicyError

            raise PolicyError(f"{path} is not a transformers model folder (no config.json)")
        return path
    from huggingface_hub import snapshot_download

    from genevolve.policies.base import PolicyError

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached; try the hub unless offline
        pass
    offline = env_flag("HF_HUB_OFFLINE")
    try:
        if offline:
            raise OSError("HF_HUB_OFFLINE is set")
        return Path(snapshot_download(model_id))
    except Exception as exc:  # noqa: BLE001
        raise PolicyError(
            f"model '{model_id}' is not on disk and cannot be downloaded ({type(exc).__name__}): on a machine with "
            f"network run `hf download {model_id} --local-dir <dir>`, copy <dir> here and use hf:<dir>") from None


def convert_gguf(gguf_path: str | Path) -> Path:
    """An HF-format copy of a GGUF checkpoint, made once (~50 s for 270M) and cached by file identity.

    transformers dequantises GGUF weights on load; a GGUF-loaded model refuses save_pretrained, so
    the copy is rebuilt from its config and filled with its state dict.
    """
    import hashlib
    import shutil
    import tempfile

    gguf = Path(gguf_path).resolve()
    st = gguf.stat()
    key = hashlib.sha256(f"v2|{gguf}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    target = model_cache_dir() / f"{gguf.stem}-{key}"
    if (target / ".complete").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    config.dtype = torch.bfloat16
    if hasattr(config, "quantization_config"):  # the copy holds plain weights; 4-bit is chosen at load
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf.name} lost weights: missing={missing[:5]} unexpected={unexpected[:5]}")
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        loaded.generation_config.save_pretrained(tmp)
        (tmp / ".complete").write_text(str(gguf))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)  # atomic: a concurrent reader sees the old state or the complete copy
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
