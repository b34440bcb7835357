"""A tiny random Stable Diffusion pipeline, built offline from configs and saved to disk.

It goes through exactly the loading code real checkpoints use (``from_pretrained`` on a folder
with model_index.json), yet builds in about a second and renders in well under one on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path


def _write_clip_tokenizer(folder: Path) -> None:
    """A byte-level BPE vocabulary with no merges: every byte is a token (CLIP's format)."""
    folder.mkdir(parents=True, exist_ok=True)
    # Byte-level BPE shows each byte as a printable character: printable Latin-1 bytes stand for
    # themselves, the others are shifted past 255.
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    chars, shift = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + shift))
            shift += 1
    vocab = {}
    for ch in chars:
        vocab[ch] = len(vocab)
    for ch in chars:
        vocab[ch + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def build_tiny_sd(path: str | Path) -> Path:
    """Write a random StableDiffusionPipeline to ``path`` and return it."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path = Path(path)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=16, attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=4,
        layers_per_block=1, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=32, mid_block_add_attention=False,
    )
    tok_dir = path.parent / (path.name + "_tokenizer_src")
    _write_clip_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=32, projection_dim=16,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(path)
    return path


_BUILT: dict[str, Path] = {}


def shared_tiny_sd(tmp_path_factory) -> Path:
    """One tiny pipeline per test session, whichever test file asks first."""
    if "sd" not in _BUILT:
        _BUILT["sd"] = build_tiny_sd(tmp_path_factory.mktemp("tiny_sd") / "pipe")
    return _BUILT["sd"]


if __name__ == "__main__":  # python tests/helpers/tiny_diffusers.py /tmp/tiny-sd
    import sys

    print(build_tiny_sd(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-sd"))
