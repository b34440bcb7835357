"""The nano recipe's reporting: the GRPO stages' per-step table and chart, the paired section of the
card, from a run folder laid out as the stages write it."""

from __future__ import annotations

import json

import pytest


from genevolve.training.metrics import RunFiles
from genevolve.nano.report import grpo_chart, grpo_section, model_card_sections
from genevolve.nano.report import render_card, render_docs


def _grpo_run(out, name, rewards, sdl=False):
    files = RunFiles(out / name, create=True)
    for step, (mean, sd) in enumerate(rewards, 1):
        row = {"step": step, "loss": 0.01, "reward_mean": mean, "reward_std": sd, "trained_samples": 4,
               "terminations": {"answer": 4, "max_rounds": 2}, "tool_counts": {"search": 3, "query_knowledge": 2},
               "timings": {"generation_s": 200.0, "tools_s": 3.0, "judge_s": 5.0}}
        if sdl:
            row.update({"sdl_kl": 0.02 / step, "guides_added": 1, "guide_hit_rate": 0.0 if step == 1 else 1.0})
        if step == 2:  # runs before 2026-12-06 logged no pictures
            row["pictures"] = {"user_given": 3, "user_bound": 2, "library_bound": 1}
        files.log(row)
    files.log({"step": len(rewards), "train_runtime": 99.0})  # the end-of-run summary is not a step
    if not sdl:  # the group's programs at step 1: two copies of the request, one that adds, one with none
        question = "three red apples in a row"
        quality = "High detail, coherent single image, no watermark, no stray text."
        rollouts = [{"reward": 0.5, "program": "Three red apples in a row."},  # as the trainer logs them
                    {"reward": 0.5, "program": f"Three red apples in a row. {quality}"},
                    {"reward": 0.9, "program": "Three red apples in a row, exactly 3, evenly spaced left to right, "
                                              "each fully visible."},
                    {"reward": 0.0, "program": None}]
        with open(out / name / "rollouts.jsonl", "w", encoding="utf-8") as f:
            f.write(json.dumps({"step": 1, "prompt_id": "p1", "question": question, "rollouts": rollouts}) + "\n" + '{"step": 2, "que')


def test_grpo_section_and_chart_from_the_stage_metrics(tmp_path):
    _grpo_run(tmp_path, "grpo", [(0.40, 0.10), (0.55, 0.05)])
    _grpo_run(tmp_path, "grpo_sdl", [(0.45, 0.12), (0.50, 0.10)], sdl=True)  # the gate opens at step 2
    table = grpo_section(tmp_path)
    rows = [line for line in table.splitlines() if line.startswith("| grpo")]
    assert len(rows) == 4  # one per optimizer step, none for the summary row
    assert "| grpo | 1 | 0.400 ± 0.100 | 4/6 | 2/3 | 2 | – | 4 | – | – | 208 |" in table  # copies / programs
    assert "| grpo | 2 | 0.550 ± 0.050 | 4/6 | – | 2 |" in table  # a torn last rollout row counts nothing
    assert "| grpo_sdl | 1 | 0.450 ± 0.120 | 4/6 | – | 2 | – | 4 | 0.0200 | 1 / 0% | 208 |" in table
    assert "| grpo_sdl | 2 | 0.500 ± 0.100 | 4/6 | – | 2 | 2/3 · 1 | 4 | 0.0100 | 1 / 100% | 208 |" in table
    from PIL import Image

    with Image.open(grpo_chart(tmp_path, tmp_path / "g.png")) as im:
        assert im.format == "PNG" and im.width > 500
    assert grpo_section(tmp_path / "nothing") is None and grpo_chart(tmp_path / "nothing", tmp_path / "x.png") is None


def test_card_and_docs_carry_the_grpo_and_paired_sections(tmp_path):
    _grpo_run(tmp_path, "grpo", [(0.40, 0.10)])
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "paired.md").write_text(
        "| system | against | requests |\n|---|---|---|\n| sft+grpo | sft | 24 |\n", encoding="utf-8")
    sections = model_card_sections(tmp_path, "sft")
    for text in (render_card(sections), render_docs(sections)):
        assert "| grpo | 1 | 0.400 ± 0.100 |" in text and "| sft+grpo | sft | 24 |" in text
    # The evaluation's sizes are the run's own, not the recipe's defaults.
    import json

    (tmp_path / "stages.json").write_text(json.dumps({"eval": {"done": True, "requests": 20}}))
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "manifest.json").write_text(json.dumps({"counts": {
        "recipes": 9, "answered": 9, "filter_passed": 9, "kept": 9, "train": 8, "val": 1, "eval": 152}}))
    assert "a stratified 20 of the eval\nsplit's 152," in render_docs(model_card_sections(tmp_path, "sft"))
    # An empty comparison (no shared requests yet) says it was not measured rather than showing a bare header.
    (tmp_path / "eval" / "paired.md").write_text("| h |\n|---|\n", encoding="utf-8")
    assert "paired" not in model_card_sections(tmp_path, "sft")


def test_the_card_of_an_sft_adapter_says_no_grpo_ran_instead_of_placeholders(tmp_path):
    """The adapter shipped on 2026-12-07 is an SFT stage from a run with no GRPO or eval stage; its
    card described GRPO it never had, with "(not measured yet…)" under it."""
    card = render_card(model_card_sections(tmp_path, "sft"))
    assert "No GRPO stage ran in the run this adapter comes from" in card
    assert "Then GRPO and GRPO+SDL from the SFT adapter" not in card
    assert "Not run for this adapter: the run it comes from has no `eval` stage" in card
    assert "Shipped stage: **sft**" in card and "copies the request no more often" in card
    _grpo_run(tmp_path, "grpo", [(0.40, 0.10)])
    assert "Then GRPO and GRPO+SDL from the SFT adapter" in render_card(model_card_sections(tmp_path, "sft+grpo"))


def test_the_recipe_section_shows_every_sweep_run_with_its_command(tmp_path):
    import json

    row = lambda variant, s: {"variant": variant, "steps": 12, "eval_records": 8, "s_per_step": s,  # noqa: E731
                              "tokens_per_s": 100.0, "eval_loss": 1.4}
    (tmp_path / "recipe_sweep.json").write_text(json.dumps([row("lora-bf16", 6.7), row("lora-fp32", 4.2)]))
    (tmp_path / "recipe_sweep_reversed.json").write_text(json.dumps([row("lora-fp32", 4.1)]))
    docs = render_docs(model_card_sections(tmp_path, "sft"))
    assert "--steps 12 --eval-records 8" in docs
    assert "| lora-bf16 | 6.7 | 100.0 | 1.4 | recipe_sweep.json |" in docs
    assert "| lora-fp32 | 4.1 | 100.0 | 1.4 | recipe_sweep_reversed.json |" in docs
    assert "did not finish" not in docs


def test_the_docs_script_writes_the_page_and_charts_from_a_run(tmp_path):
    """The library never writes the repository's docs; scripts/nano_docs.py does, from a run folder."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / "run"
    _grpo_run(run, "grpo", [(0.40, 0.10), (0.55, 0.05)])
    docs = tmp_path / "docs"
    script = Path(__file__).resolve().parents[2] / "scripts" / "nano_docs.py"
    refused = subprocess.run([sys.executable, str(script), str(run), "--docs", str(docs)],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "has not shipped" in refused.stderr  # no ship stage, no --shipped
    (run / "stages.json").write_text(json.dumps({"ship": {"done": True, "shipped": "grpo"}}))
    done = subprocess.run([sys.executable, str(script), str(run), "--docs", str(docs)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    page = (docs / "nano.md").read_text(encoding="utf-8")
    assert "| grpo | 1 | 0.400 ± 0.100 |" in page and (docs / "images" / "nano_grpo.png").is_file()

    # What was written by hand survives the next rewrite; what was generated is written anew.
    from genevolve.nano.report import APPENDIX_START, NOTES_END, NOTES_START

    head, rest = page.split("Each stage resumes after a kill", 1)
    hand = (f"{head}{NOTES_START}\n**Read first:** the other runs say X.\n{NOTES_END}\n\n"
            f"Each stage resumes after a kill{rest.replace('| grpo | 1 |', '| grpo | stale |')}"
            f"\n{APPENDIX_START}\n\n## 8. By hand\n\nA table nobody's run folder holds.\n")
    (docs / "nano.md").write_text(hand, encoding="utf-8")
    again = subprocess.run([sys.executable, str(script), str(run), "--docs", str(docs)], capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr
    page = (docs / "nano.md").read_text(encoding="utf-8")
    assert page.count("**Read first:** the other runs say X.") == 1 and page.count("## 8. By hand") == 1
    assert page.index("**Read first:**") < page.index("## 0.") < page.index("## 7.") < page.index("## 8. By hand")
    assert "| grpo | 1 | 0.400 ± 0.100 |" in page and "| grpo | stale |" not in page


def test_ship_choice_needs_a_clean_interval_above_zero_against_the_shipped_adapter():
    from genevolve.nano.recipe import ship_choice

    adapters = {"sft": 1, "grpo": 1, "grpo_sdl": 1}

    def row(system, delta, lo, metric="clean_not_copied", hi=0.3):
        return {"metric": metric, "system": system, "baseline": "shipped", "delta": delta, "delta_ci95": [lo, hi]}

    assert ship_choice([], adapters) is None  # nothing measured: the shipped adapter stays
    assert ship_choice([row("sft", 0.05, -0.02)], adapters) is None  # better on average, not shown
    assert ship_choice([row("sft", 0.2, 0.1, metric="valid")], adapters) is None  # another metric decides nothing
    assert ship_choice([row("sft", 0.05, 0.01), row("sft+grpo+sdl", 0.08, 0.02)], adapters) == "grpo_sdl"
    assert ship_choice([row("sft+grpo+sdl", 0.08, 0.02)], {"sft": 1}) is None  # no such adapter on disk
    assert ship_choice([row("sft+grpo", 0.08, 0.02), row("sft+grpo+sdl", 0.08, 0.02)], adapters) == "grpo"  # a tie
    # Clean alone decides nothing: a copy of the request is clean, and the adapter shipped on
    # 2026-12-06 is clean on 35 of 36 external requests while copying half of them.
    assert ship_choice([row("sft+grpo", 0.2, 0.1, metric="clean")], adapters) is None
    assert ship_choice([row("sft+grpo", -0.028, -0.083, metric="clean"), row("sft+grpo", 0.33, 0.17),
                        row("sft+grpo", -0.47, -0.64, metric="copied")], adapters) == "grpo"
    # Clean by copying the request: GRPO on a reward that paid a copy, measured on the external sets.
    copier = [row("sft+grpo", 0.139, 0.028), row("sft+grpo", 0.889, 0.778, metric="copied")]
    assert ship_choice(copier, adapters) is None
    assert ship_choice([row("sft+grpo", 0.139, 0.028), row("sft+grpo", 0.0, -0.05, metric="copied")],
                       adapters) == "grpo"  # copies as often as the shipped adapter
    # The adapter shipped on 2026-12-06 copied 14 points more than the one before it, an interval
    # through zero: "not shown to copy more" is no longer enough.
    assert ship_choice([row("sft+grpo", 0.167, 0.056), row("sft+grpo", 0.139, -0.083, metric="copied")],
                       adapters) is None
    # Clean on the public sets, but the user's own pictures bound less often on the held-out requests
    # that give them: the GRPO adapter with a KL term, 4 of 11 where the shipped adapter bound 8.
    winner = [row("sft+grpo", 0.167, 0.056)]
    fewer = row("sft+grpo", -0.364, -0.727, metric="user_pictures_bound", hi=0.0)
    assert ship_choice(winner + [fewer], adapters) is None  # an interval touching zero is no excuse
    same = row("sft+grpo", 0.0, -0.2, metric="user_pictures_bound", hi=0.2)
    assert ship_choice(winner + [same], adapters) == "grpo"


def test_external_stage_pairs_every_system_with_the_shipped_adapter_and_ship_keeps_it(tmp_path):
    """Real planner runs of the program eval stand in for two systems' run folders; the recipe's
    comparison, summary and ship decision read them as the external stage leaves them."""
    import json

    from genevolve.bench.eval_sets import load_eval_set
    from genevolve.bench.programs import run_program_eval
    from genevolve.nano.recipe import NanoRecipe

    cases = load_eval_set("official-examples")
    for name in ("shipped", "sft"):
        run_program_eval([dict(c) for c in cases], tmp_path / "external" / name, policy="planner",
                         set_name="official-examples", progress=False)
    # The held-out requests that give a picture: what the public sets cannot show (binding it).
    from pathlib import Path

    picture = Path(__file__).resolve().parents[2] / "assets" / "library" / "red_motorcycle.jpg"
    pictured = [{"id": "p1", "question": "The motorcycle from the first image parked beside a desk lamp.",
                 "images": [str(picture)], "category": "spatial"}]
    for name in ("shipped", "sft"):
        run_program_eval([dict(c) for c in pictured], tmp_path / "user-pictures" / name, policy="planner",
                         set_name="held-out user pictures", progress=False)
    recipe = NanoRecipe(tmp_path, log=lambda m: None, ship_to=tmp_path / "assets")
    pairs = recipe.external_pairs()
    (bound,) = [p for p in pairs if p["metric"] == "user_pictures_bound"]  # only from the pictured runs
    assert bound["set"] == "held-out user pictures" and bound["system"] == "sft" and bound["requests"] == 1
    assert bound["delta"] == 0 and bound["system_reward"] == 1.0  # the planner binds the user's picture
    assert not any(p["metric"] == "clean" and p.get("set") for p in pairs)  # our own data decides no headline
    clean = next(p for p in pairs if p["metric"] == "clean")
    assert clean["system"] == "sft" and clean["baseline"] == "shipped" and clean["requests"] == len(cases)
    assert clean["delta"] == 0 and clean["ties"] == len(cases)  # the same policy: no difference
    summary = (tmp_path / "external" / "summary.md").read_text(encoding="utf-8")
    assert "| shipped | 3 |" in summary and "| sft | 3 |" in summary and "clean" in summary.splitlines()[0]
    assert json.loads((tmp_path / "external" / "paired.json").read_text()) == pairs
    # An adapter in the run: equal to the shipped one, so ship keeps the assets untouched.
    ckpt = tmp_path / "sft" / "checkpoints" / "checkpoint-1"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_config.json").write_text("{}")
    (ckpt / "adapter_model.safetensors").write_bytes(b"weights")
    (tmp_path / "sft" / "checkpoints" / "latest").write_text("checkpoint-1")
    recipe.stage_ship()
    assert not (tmp_path / "assets").exists()
    assert json.loads((tmp_path / "stages.json").read_text())["ship"]["shipped"] == "kept"
    # Asked again once done, external runs (adapters trained since get their rows); a done stage
    # that trains does not.
    recipe._mark_done("external")
    recipe._mark_done("sft")
    lines: list[str] = []
    NanoRecipe(tmp_path, log=lines.append, ship_to=tmp_path / "assets", summary_only=True).run(["sft", "external"])
    assert lines[:2] == ["[nano] sft: done already", "[nano] external: starting"]


def test_external_stage_refuses_to_mix_two_shipped_adapters(tmp_path):
    import pytest

    from genevolve.nano.recipe import NanoRecipe

    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "adapter_model.safetensors").write_bytes(b"first")
    recipe = NanoRecipe(tmp_path / "run", log=lambda m: None, ship_to=assets)
    (tmp_path / "run" / "external").mkdir(parents=True)
    recipe._pin_shipped(tmp_path / "run" / "external")
    recipe._pin_shipped(tmp_path / "run" / "external")  # the same adapter: fine
    (assets / "adapter_model.safetensors").write_bytes(b"second")
    with pytest.raises(RuntimeError, match="shipped adapter changed"):
        recipe._pin_shipped(tmp_path / "run" / "external")


def test_systems_are_asked_by_row_or_stage_name_and_a_typo_runs_nothing(tmp_path):
    import pytest

    from genevolve.nano.recipe import NanoRecipe

    have = ["planner", "shipped", "sft", "sft+grpo+sdl"]
    recipe = NanoRecipe(tmp_path, log=lambda m: None, ship_to=tmp_path / "assets", eval_systems=["grpo_sdl", "planner"])
    assert recipe._asked_systems(have) == {"sft+grpo+sdl", "planner"}
    with pytest.raises(ValueError, match=r"no such system to evaluate: sft\+grpo \(have"):
        NanoRecipe(tmp_path, log=lambda m: None, eval_systems=["grpo"])._asked_systems(have)
    # The external stage refuses a name that matches nothing before it runs any system.
    lines: list[str] = []
    typo = NanoRecipe(tmp_path, log=lines.append, ship_to=tmp_path / "assets", eval_systems=["gpro_sdl"])
    with pytest.raises(ValueError, match="gpro_sdl"):
        typo.stage_external()
    assert not any("external:" in line for line in lines)
    assert not (tmp_path / "external" / "planner").exists()


def test_revisits_pair_each_prompts_second_visit_with_its_first_and_sdl_with_grpo(tmp_path):
    import json

    from genevolve.nano.report import revisit_gains, revisit_section

    def rollouts(name, visits):  # (step, prompt id, rewards of the group)
        (tmp_path / name).mkdir()
        (tmp_path / name / "rollouts.jsonl").write_text("".join(
            json.dumps({"step": s, "prompt_id": p, "rollouts": [{"reward": r} for r in rs]}) + "\n"
            for s, p, rs in visits))

    rollouts("grpo", [(1, "a", [0.2, 0.4]), (2, "b", [0.5]), (3, "a", [0.3, 0.3]), (4, "b", [0.5]), (5, "c", [0.1])])
    rollouts("grpo_sdl", [(1, "a", [0.2, 0.4]), (2, "b", [0.5]), (3, "b", [0.9]), (4, "a", [0.6, 0.8])])
    gains = revisit_gains(tmp_path)
    # the order of visits is the step, not the line: grpo_sdl saw "a" at steps 1 and 4
    assert gains["grpo"] == {"a": pytest.approx(0.0), "b": pytest.approx(0.0)} and "c" not in gains["grpo"]
    assert gains["grpo_sdl"] == {"a": pytest.approx(0.4), "b": pytest.approx(0.4)}
    text = revisit_section(tmp_path, resamples=200)
    assert "| grpo | 2 | +0.000 [+0.000, +0.000] | 0 / 2 / 0 |" in text
    assert "| grpo_sdl | grpo | 2 | 0.400 | 0.000 | +0.400 [+0.400, +0.400] | 2 / 0 / 0 |" in text
    assert revisit_section(tmp_path / "nothing") is None


def test_research_payoff_compares_rollouts_with_and_without_each_tool_inside_a_group(tmp_path):
    import json

    from genevolve.nano.report import research_payoff, research_section

    (tmp_path / "grpo").mkdir()
    groups = [  # (step, [(reward, tools, termination)])
        (1, [(0.9, ["search"], "answer"), (0.5, [], "answer"), (0.0, ["search"], "format_error")]),
        (2, [(0.6, ["query_knowledge"], "answer"), (0.7, [], "answer")]),
        (3, [(0.8, ["search", "query_knowledge"], "answer"), (0.4, ["query_knowledge"], "answer")]),
        (4, [(0.5, [], "answer"), (0.5, [], "answer")]),
    ]
    (tmp_path / "grpo" / "rollouts.jsonl").write_text("".join(
        json.dumps({"step": s, "prompt_id": f"p{s}", "rollouts": [{"reward": r, "tools": t, "termination": e}
                                                                  for r, t, e in rows]}) + "\n"
        for s, rows in groups))
    p = research_payoff(tmp_path)["grpo"]
    # search: groups 1 (0.9 vs 0.5; the format error left out) and 3 (0.8 vs 0.4)
    assert p["diffs"]["search"] == [pytest.approx(0.4), pytest.approx(0.4)]
    assert p["diffs"]["query_knowledge"] == [pytest.approx(-0.1)]  # group 3 used it on both sides
    assert p["diffs"]["any tool"] == [pytest.approx(0.4), pytest.approx(-0.1)]
    assert p["no_tool_by_quarter"] == [(1, 3), (1, 2), (0, 2), (2, 2)]
    text = research_section(tmp_path, resamples=200)
    assert "| grpo | search | 2 | +0.400 [+0.400, +0.400] | 1/3, 1/2, 0/2, 2/2 |" in text
    assert "| grpo | image_search | 0 | – |" in text
    assert research_section(tmp_path / "nothing") is None
    # With the pool's teacher records: the same differences, kept where the teacher used the tool.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rl_prompts.jsonl").write_text("".join(
        json.dumps({"id": pid, "question": "q", "teacher": {"tools": tools}}) + "\n"
        for pid, tools in [("p1", ["search", "query_knowledge"]), ("p2", ["query_knowledge"]), ("p3", []), ("p4", ["image_search"])]))
    p = research_payoff(tmp_path)["grpo"]
    assert p["diffs_where_teacher"]["search"] == [pytest.approx(0.4)]  # p3 searched, its teacher did not
    assert p["diffs_where_teacher"]["query_knowledge"] == [pytest.approx(-0.1)]
    assert p["diffs_where_teacher"]["any tool"] == [pytest.approx(0.4), pytest.approx(-0.1)]
    text = research_section(tmp_path, resamples=200)
    assert "| grpo | search | 2 | +0.400 [+0.400, +0.400] | 1 | +0.400 [+0.400, +0.400] | 1/3, 1/2, 0/2, 2/2 |" in text
    assert "| grpo | image_search | 0 | – | 0 | – |" in text


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.usefixtures("torch_one_thread")
def _tiny_recipe(tmp_path, monkeypatch, sft_steps=2):
    """A recipe run folder on the tiny model: its configs, SFT data and RL prompts."""
    import shutil
    from pathlib import Path

    import yaml

    import genevolve.nano.recipe as recipe

    repo = Path(__file__).resolve().parents[2]
    data = repo / "configs" / "data"
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
    configs = tmp_path / "configs"
    configs.mkdir()
    sft = yaml.safe_load((repo / "configs" / "sft_tiny_cpu.yaml").read_text())
    sft.update(max_steps=sft_steps, eval_every=2, save_every=2, model={**sft["model"], "lora": lora})
    (configs / "sft.yaml").write_text(yaml.safe_dump(sft))
    grpo = yaml.safe_load((repo / "configs" / "grpo_tiny_cpu.yaml").read_text())
    grpo.update(max_steps=4, save_steps=1, model={**grpo["model"], "lora": lora},
                agent={**grpo["agent"], "system_prompt_path": str(data / "tiny_system.md")})
    (configs / "grpo_sdl.yaml").write_text(yaml.safe_dump({**grpo, "sdl": {**grpo["sdl"], "delta_min": 0.5}}))
    (configs / "grpo.yaml").write_text(yaml.safe_dump({**grpo, "sdl": {"enabled": False}}))
    monkeypatch.setattr(recipe, "CONFIGS", configs)
    out = tmp_path / "nano"
    (out / "data").mkdir(parents=True)
    for name in ("train", "val"):
        shutil.copy(data / "tiny_sft.jsonl", out / "data" / f"{name}.jsonl")
    shutil.copy(data / "tiny_prompts.jsonl", out / "data" / "rl_prompts.jsonl")
    return out


def test_fork_at_trains_grpo_sdl_to_the_step_and_starts_plain_grpo_there(tmp_path, monkeypatch):
    """`train nano --fork-at N` on the tiny model: GRPO+SDL trains to step N, plain GRPO starts from
    that checkpoint with its first N rows, and GRPO+SDL then goes on from where it stopped."""
    import json

    import genevolve.nano.recipe as recipe
    from genevolve.training.metrics import read_metrics

    out = _tiny_recipe(tmp_path, monkeypatch)
    lines = []
    ledger = recipe.NanoRecipe(out, log=lines.append, fork_at=2).run(["sft", "grpo", "grpo_sdl"])
    assert ledger["grpo"]["done"] and ledger["grpo_sdl"]["done"]
    assert any("training grpo_sdl to step 2 first" in line for line in lines)
    plain, with_sdl = read_metrics(out / "grpo"), read_metrics(out / "grpo_sdl")
    assert [m["step"] for m in plain] == [1, 2, 3, 4] == [m["step"] for m in with_sdl]
    assert [m["reward_mean"] for m in plain[:2]] == [m["reward_mean"] for m in with_sdl[:2]]
    assert "sdl_samples" not in plain[0] and "sdl_samples" in with_sdl[3]
    first = [json.loads(line) for line in (out / "grpo" / "rollouts.jsonl").read_text().splitlines()]
    source = [json.loads(line) for line in (out / "grpo_sdl" / "rollouts.jsonl").read_text().splitlines()]
    assert first[:4] == source[:4]  # steps 1-2, two prompts a step
    # Step 3 starts from the same weights, optimizer and RNG in both: the same rollouts are sampled.
    assert len(first) == len(source) == 8
    assert [r["rollouts"] for r in first[4:6]] == [r["rollouts"] for r in source[4:6]]


def test_a_stop_request_ends_the_recipe_not_just_the_stage(tmp_path, monkeypatch):
    """SIGTERM during SFT stops the trainer after its step and the recipe with it: the next stage
    would build a trainer with a fresh stop flag and go on training in a process told to stop."""
    import os
    import signal
    import threading
    import time

    import genevolve.nano.recipe as recipe

    out = _tiny_recipe(tmp_path, monkeypatch, sft_steps=500)
    metrics = out / "sft" / "metrics.jsonl"

    def stop_once_training():
        deadline = time.time() + 120
        while time.time() < deadline and not (metrics.is_file() and metrics.read_text().strip()):
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread, by the trainer's GracefulStop

    threading.Thread(target=stop_once_training, daemon=True).start()
    lines = []
    ledger = recipe.NanoRecipe(out, log=lines.append).run(["sft", "grpo", "grpo_sdl"])
    assert not ledger["sft"].get("done") and ledger["sft"]["sessions"] == 1
    assert "grpo" not in ledger and not (out / "grpo").exists() and not (out / "grpo_sdl").exists()
    assert any("sft stopped at step" in line and "run the same command" in line for line in lines)
    assert (out / "sft" / "checkpoints" / "latest").is_file()  # the stop saved its step


def test_sft_data_repeats_the_conversations_whose_answer_binds_a_picture(tmp_path):
    import json

    from genevolve.nano.recipe import write_picture_binds

    def record(rid, refs, answer_text=None):
        program = {"gen_prompt": "A horse behind a teddy bear.", "reference_images": refs}
        last = answer_text or f"<think>done</think>\n<answer>{json.dumps(program)}</answer>"
        return {"id": rid, "images": [f"images/{rid}.png"] if refs else [],
                "messages": [{"role": "system", "content": "plan"}, {"role": "user", "content": "a horse"},
                             {"role": "assistant", "content": last}]}

    rows = [record("binds", [{"img_id": "IMG_001", "note": "the user's horse"}]), record("none", []),
            record("broken", [], answer_text="<think>x</think><answer>{not json</answer>"),
            {"id": "no-turns", "messages": [{"role": "user", "content": "a horse"}]}]
    train = tmp_path / "data" / "train.jsonl"
    train.parent.mkdir()
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "sft" / "picture_binds.jsonl"
    assert write_picture_binds(train, out, copies=2) == 2
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in written] == ["binds", "binds"]
    # The copy lives in another folder, so its images must not be read against it.
    assert written[0]["images"] == [str((train.parent / "images" / "binds.png").resolve())]
    assert write_picture_binds(train, out, copies=0) == 0 and out.read_text(encoding="utf-8") == ""
