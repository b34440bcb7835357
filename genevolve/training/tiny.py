"""A tiny word-level Gemma 3 for smoke runs and CI (``model: tiny:gemma3`` in a config).

The vocabulary is ~80 words: the protocol tags as single tokens, colours, a few nouns and JSON
punctuation. A random model over so few tokens samples any given word often enough that a
verifiable reward has variance from step one, which is what lets a GRPO run show learning
in a few dozen CPU steps. It is built from a config and saved with ``save_pretrained`` so that
training loads it through the same ``from_pretrained`` path as a real checkpoint.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<think>", "</think>",
           "<tool_call>", "</tool_call>", "<answer>", "</answer>", "<tool_response>", "</tool_response>",
           "<image>"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
WORDS = ["system", "user", "model", "draw", "a", "an", "the", "of", "in", "with", "cat", "dog", "house",
         "tree", "car", "ball", "sky", "poster", "title", "bold", "gen_prompt", "reference_images",
         "name", "arguments", "search", "query_knowledge", "queries", "skill_name", "img_id", "note",
         "first", "reference", "image", "plan", "look", "answer", "now", "this", "is", "last", "round",
         "write", "program", "result", "text", "photo", "style"]
PUNCT = ["{", "}", "[", "]", '"', ":", ",", ".", "'", "(", ")", "_", "-", "!", "?", "/"]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] if m['content'] is string else m['content'] | map(attribute='text') | join('') }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build_tiny_word_gemma3(out_dir: str | Path, *, hidden_size: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny random Gemma3ForCausalLM + word-level tokenizer to ``out_dir``; return it."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    import os
    import shutil

    final = Path(out_dir)
    if (final / "config.json").is_file() and (final / "tokenizer.json").is_file():
        return final
    # Built beside the target and renamed into place: several processes of one launch may build
    # it at once, and none may load a half-written copy.
    out = final.parent / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate(SPECIAL + COLOURS + WORDS + PUNCT)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # Words (underscores included) and single punctuation marks: JSON stays readable token by token.
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                pre_tokenizers.Split(Regex(r"\w+|[^\w\s]"), behavior="isolated")])
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    # Tags are matched before pre-tokenisation, so "<answer>" stays one token.
    tk.add_special_tokens(SPECIAL[:6])
    tk.add_tokens(SPECIAL[6:])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                  unk_token="<unk>")
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out)

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1, head_dim=hidden_size // 2,
        max_position_embeddings=2048, sliding_window=128, pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<bos>"], eos_token_id=[vocab["<eos>"], vocab["<end_of_turn>"]],
        layer_types=["sliding_attention", "full_attention"][:layers] + ["full_attention"] * max(0, layers - 2),
        tie_word_embeddings=True,
    )
    model = Gemma3ForCausalLM(config)
    model.generation_config.eos_token_id = [vocab["<eos>"], vocab["<end_of_turn>"]]
    model.save_pretrained(out)
    try:
        out.rename(final)
    except OSError:  # another process finished first: its copy is identical
        shutil.rmtree(out, ignore_errors=True)
    return final
