"""From chat messages to token ids with the masks the trainers need.

A conversation is rendered once with the model's own chat template, then cut into segments:
context (system, user, tool responses, template scaffolding), assistant (what the policy wrote,
plus the template's end-of-turn marker so the model learns to stop) and, inside assistant
turns, decision spans (the bodies of ``<tool_call>`` and ``<answer>`` blocks, where SDL acts).
Each segment is tokenised on its own, so a mask is exact by construction rather than recovered
from character offsets, and the assistant tokens of two renderings of the same conversation
(student prompt vs teacher prompt with a guide) line up one to one.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

IMAGE_MARK = "<image>"
_DECISION_RE = re.compile(r"<tool_call>(.*?)</tool_call>|<answer>(.*?)</answer>", re.DOTALL)
_THINK_RE = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


@dataclass
class Encoded:
    input_ids: list[int]
    loss_mask: list[bool]  # token is part of an assistant turn (SFT/GRPO loss)
    decision_mask: list[bool]  # token is inside a <tool_call>/<answer> block of an assistant turn
    vision: dict[str, Any] = field(default_factory=dict)  # pixel_values, image_grid_thw... for VLMs
    token_types: list[int] | None = None  # mm_token_type_ids (1 = image token) when images are present

    def __len__(self) -> int:
        return len(self.input_ids)

    def model_inputs(self) -> dict:
        """Batch-of-one tensors for a forward pass."""
        import torch

        ids = torch.tensor([self.input_ids])
        out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), **self.vision}
        if self.token_types is not None:
            out["mm_token_type_ids"] = torch.tensor([self.token_types])
        return out

    @property
    def labels(self) -> list[int]:
        return [t if m else -100 for t, m in zip(self.input_ids, self.loss_mask)]


class ConversationEncoder:
    """Renders and tokenises conversations for one tokenizer (and processor, for VLMs)."""

    def __init__(self, tokenizer, processor=None, max_length: int | None = None):
        self.tokenizer = tokenizer
        self.processor = processor
        self.max_length = max_length
        self._template_owner = processor if processor is not None and getattr(processor, "chat_template", None) \
            else tokenizer
        if not getattr(self._template_owner, "chat_template", None):
            raise ValueError("the tokenizer has no chat template; set one (tokenizer.chat_template = ...) "
                             "or train from a chat checkpoint")
        self.image_token = getattr(processor, "image_token", None) if processor is not None else None
        self._end_marker = self._probe_end_marker()

    # ------------------------------------------------------------------ rendering

    def _structured(self, messages: list[dict]) -> list[dict]:
        """For a VLM processor, turn ``<image>`` marks into image content parts."""
        if self.image_token is None:
            # A text-only model never saw the pixels (nor a mark for them): drop the marks.
            return [{"role": m["role"], "content": m["content"].replace(IMAGE_MARK, "")
                     if isinstance(m["content"], str) else m["content"]} for m in messages]
        out = []
        for m in messages:
            content = m["content"]
            n = content.count(IMAGE_MARK) if isinstance(content, str) else 0
            if n and m["role"] != "assistant":
                text = content.replace(IMAGE_MARK, "")
                out.append({"role": m["role"], "content": [{"type": "image"}] * n + [{"type": "text", "text": text}]})
            else:
                out.append({"role": m["role"], "content": content})
        return out

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return self._template_owner.apply_chat_template(self._structured(messages), tokenize=False,
                                                        add_generation_prompt=add_generation_prompt)

    def _probe_end_marker(self) -> str:
        probe = "\u2063PROBE\u2063"
        text = self.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}])
        tail = text[text.find(probe) + len(probe):] if probe in text else ""
        return tail.rstrip("\n ")

    # ------------------------------------------------------------------ segments

    def segments(self, messages: list[dict], add_generation_prompt: bool = False) -> list[tuple[str, str]]:
        """``[(text, kind)]`` with kind in context | assistant | decision, covering the rendering."""
        text = self.render(messages, add_generation_prompt)
        segs: list[tuple[str, str]] = []
        cursor = 0
        for m in messages:
            if m["role"] != "assistant" or not isinstance(m["content"], str) or not m["content"]:
                continue
            content = m["content"]
            pos = text.find(content, cursor)
            if pos < 0:  # some templates drop <think> from earlier turns; train on what is shown
                content = _THINK_RE.sub("", content)
                pos = text.find(content, cursor) if content else -1
            if pos < 0:
                continue
            segs.append((text[cursor:pos], "context"))
            last = 0
            for dm in _DECISION_RE.finditer(content):
                g = 1 if dm.group(1) is not None else 2
                segs.append((content[last:dm.start(g)], "assistant"))
                segs.append((dm.group(g), "decision"))
                last = dm.end(g)
            segs.append((content[last:], "assistant"))
            end = pos + len(content)
            if self._end_marker and text.startswith(self._end_marker, end):
                segs.append((self._end_marker, "assistant"))
                end += len(self._end_marker)
            cursor = end
        segs.append((text[cursor:], "context"))
        return [(s, k) for s, k in segs if s]

    # ------------------------------------------------------------------ tokens

    def encode(self, messages: list[dict], images: Iterable[Any] = (), add_generation_prompt: bool = False) -> Encoded:
        """Token ids and masks; ``images`` (paths or PIL images) are consumed in ``<image>`` order."""
        pending = list(images)
        ids: list[int] = []
        loss: list[bool] = []
        decision: list[bool] = []
        vision_parts: dict[str, list] = {}
        types: list[int] = []
        for seg, kind in self.segments(messages, add_generation_prompt):
            n_img = seg.count(self.image_token) if self.image_token and kind == "context" else 0
            if n_img:
                from PIL import Image

                take, pending = pending[:n_img], pending[n_img:]
                if len(take) < n_img:
                    raise ValueError(f"the conversation shows {n_img} more image(s) than the record lists")
                pil = [Image.open(p).convert("RGB") if not hasattr(p, "convert") else p.convert("RGB") for p in take]
                out = self.processor(text=[seg], images=pil, return_tensors="pt")
                seg_ids = out["input_ids"][0].tolist()
                if "mm_token_type_ids" in out:
                    types += out["mm_token_type_ids"][0].tolist()
                else:
                    types += [0] * len(seg_ids)
                for key, value in out.items():
                    if key not in ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids"):
                        vision_parts.setdefault(key, []).append(value)
            else:
                seg_ids = self.tokenizer(seg, add_special_tokens=False)["input_ids"]
                types += [0] * len(seg_ids)
            ids += seg_ids
            loss += [kind != "context"] * len(seg_ids)
            decision += [kind == "decision"] * len(seg_ids)
        vision = {}
        if vision_parts:
            import torch

            vision = {k: torch.cat(v, dim=0) for k, v in vision_parts.items()}
        if self.max_length and len(ids) > self.max_length:
            if vision:
                raise ValueError(f"conversation has {len(ids)} tokens > max_length {self.max_length} "
                                 "and carries images, which cannot be cut; raise max_length")
            ids, loss, decision = ids[: self.max_length], loss[: self.max_length], decision[: self.max_length]
        return Encoded(ids, loss, decision, vision, types if vision else None)


# ---------------------------------------------------------------- SFT records

def load_sft_records(paths: str | Path | list) -> list[dict]:
    """SFT records from JSONL files, JSON lists or folders of them.

    Image paths are made absolute against the file that lists them, so records from the store
    export, the data pipeline and the released dataset layout all load the same way.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    records: list[dict] = []
    for p in paths:
        p = Path(p).expanduser()
        files = sorted(p.rglob("*.jsonl")) + sorted(p.rglob("*.json")) if p.is_dir() else [p]
        if not files:
            raise FileNotFoundError(f"no SFT records (*.jsonl, *.json) under {p}")
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"SFT data file not found: {f}")
            text = f.read_text(encoding="utf-8")
            rows = json.loads(text) if f.suffix == ".json" else [json.loads(line) for line in text.splitlines()
                                                                 if line.strip()]
            if isinstance(rows, dict):
                rows = [rows]
            for row in rows:
                if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
                    continue
                row = dict(row)
                row["images"] = [str(f.parent / i) if not Path(i).is_absolute() else i for i in row.get("images", [])]
                records.append(row)
    return records


def split_records(records: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A fixed held-out split (at least one record when asked for any)."""
    if eval_fraction <= 0 or len(records) < 2:
        return list(records), []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(len(records) * eval_fraction)))
    held = set(order[:n_eval])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def load_prompts(path: str | Path) -> list[dict]:
    """GRPO prompts: bench rows (``question`` or ``prompt``) from JSONL/JSON; unknown fields are kept."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"prompt file not found: {p}")
    text = p.read_text(encoding="utf-8")
    rows = json.loads(text) if p.suffix == ".json" else [json.loads(line) for line in text.splitlines() if line.strip()]
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            row = {"question": row}
        row = dict(row)
        row.setdefault("question", row.get("prompt"))
        if not row.get("question"):
            raise ValueError(f"{p}: row {i} has no 'question' or 'prompt'")
        row.setdefault("id", str(i))
        row["images"] = [str(p.parent / im) if not Path(im).is_absolute() else im for im in row.get("images", [])]
        out.append(row)
    return out
