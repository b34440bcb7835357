"""Tiny random models built offline from configs, for tests that need a real transformers model.

``build_tiny_gemma3(out_dir)`` writes a Gemma3 text causal LM and ``build_tiny_qwen3vl(out_dir)`` a
Qwen3-VL image-text model (with image and video processor configs) to a directory, each with a
byte-level BPE tokenizer trained here on the repository's own text and a chat template. Both load
back through the same ``from_pretrained`` code path as real checkpoints (``hf:<dir>``).

The protocol tags (``<think>``, ``<tool_call>``, ``<answer>``, ``<tool_response>`` and their closing
forms) are added as single, non-special tokens: decoding keeps them, like in the released model.

Fixtures ``tiny_gemma_path`` and ``tiny_qwen3vl_path`` are session scoped; import them from
``tests/conftest.py`` (``from helpers.tiny_models import tiny_gemma_path, tiny_qwen3vl_path``) or
from a test module. The weights are random: content is noise; sizes are chosen so that a
forward + backward over 256 tokens takes a few tens of milliseconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROTOCOL_TAGS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>", "</answer>",
                 "<tool_response>", "</tool_response>"]

GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]

# Gemma-style turns: the same template the local policy gives base LMs that have none.
from genevolve.policies.local import BASE_CHAT_TEMPLATE as GEMMA_CHAT_TEMPLATE  # noqa: E402

# Qwen-style turns; an {"type": "image"} content part becomes the vision placeholder the
# processor expands to the image's patch tokens.
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _corpus() -> list[str]:
    """Local text to learn merges from: our prompts, docs and code, plus protocol examples."""
    texts: list[str] = []
    for pattern in ("genevolve/**/*.md", "genevolve/**/*.py", "*.md", "docs/**/*.md", "examples/**/*.json*"):
        for p in sorted(REPO.glob(pattern)):
            try:
                texts.append(p.read_text(encoding="utf-8")[:50_000])
            except (OSError, UnicodeDecodeError):
                continue
    texts.append('<think>I need references.</think>\n<tool_call>{"name": "search", "arguments": '
                 '{"queries": ["Eiffel Tower"]}}</tool_call>\n<tool_response>\nresults\n</tool_response>\n'
                 '<answer>{"gen_prompt": "a poster", "reference_images": []}</answer>')
    return texts


def _train_tokenizer(specials: list[str], vocab_size: int = 1024):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok


def _fast_tokenizer(tok, chat_template: str, **special_map):
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special_map)
    # Protocol tags: one token each, matched before BPE, but kept by skip_special_tokens.
    fast.add_tokens([AddedToken(t, special=False, normalized=False) for t in PROTOCOL_TAGS])
    fast.chat_template = chat_template
    return fast


def build_tiny_gemma3(out_dir) -> Path:
    """A 2-layer Gemma3 text causal LM with our tokenizer, saved to ``out_dir``."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _fast_tokenizer(_train_tokenizer(GEMMA_SPECIALS), GEMMA_CHAT_TEMPLATE,
                                pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>")
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=4096,
        sliding_window=4096, layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")],
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_qwen3vl(out_dir) -> Path:
    """A 2-layer Qwen3-VL image-text model (1-block vision tower) with processor, saved to ``out_dir``."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _fast_tokenizer(_train_tokenizer(QWEN_SPECIALS), QWEN_CHAT_TEMPLATE,
                                pad_token="<|endoftext|>", eos_token="<|im_end|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    head_dim = 16
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [4, 2, 2], "mrope_interleaved": True},
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64,
                           num_position_embeddings=64, deepstack_visual_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)

    # Small images keep the vision sequence short: at most 128x128 pixels -> 16 merged tokens.
    # The processor is saved piece by piece (tokenizer, image and video processor configs, chat
    # template) because transformers cannot construct a Qwen3-VL processor without torchvision;
    # AutoProcessor reads the same files where it is installed.
    pixels = {"shortest_edge": 32 * 32, "longest_edge": 128 * 128}
    image_processor = Qwen2VLImageProcessorPil(size=pixels, patch_size=16, temporal_patch_size=2, merge_size=2,
                                               image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    image_processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "video_preprocessor_config.json").write_text(json.dumps({
        "video_processor_type": "Qwen3VLVideoProcessor", "processor_class": "Qwen3VLProcessor",
        "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "fps": 2, "do_sample_frames": True,
        "size": {"shortest_edge": 32 * 32, "longest_edge": 4 * 128 * 128},
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }, indent=2))
    (out / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen3VLProcessor"}, indent=2))
    (out / "chat_template.jinja").write_text(QWEN_CHAT_TEMPLATE)
    return out


@pytest.fixture(scope="session")
def tiny_gemma_path(tmp_path_factory) -> Path:
    return build_tiny_gemma3(tmp_path_factory.mktemp("tiny_gemma3"))


@pytest.fixture(scope="session")
def tiny_qwen3vl_path(tmp_path_factory) -> Path:
    return build_tiny_qwen3vl(tmp_path_factory.mktemp("tiny_qwen3vl"))
