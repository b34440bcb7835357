"""GRPO: the advantages TRL trains with, logged as they are, the group tool cache, the hybrid reward on a real
trajectory, and a tiny model whose mean reward rises under a verifiable rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


# One torch thread: the trainers' tests compare runs step by step, and two cores are shared.
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_trl_trains_on_the_sampled_ids_and_rollouts_log_its_advantages(tiny_gemma_path, tmp_path):
    """TRL's batch holds exactly the token histories the lock-step rollouts sampled (env_mask as its
    tool_mask), rollouts.jsonl carries the advantages TRL weights the loss with, and the rollouts are
    sampled at the config's temperature/top_p even under a profile with sampling defaults of its own."""
    from genevolve.training.grpo import GRPOConfig
    from genevolve.training.grpo_trainer import build_trainer
    from genevolve.training.modeling import ModelConfig
    from genevolve.training.rewards import Reward
    from genevolve.training.trl_run import train_to_end

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "r", "question": "draw a red cat"}) + "\n")

    # A real function of the trajectory, so advantages are not all zero. The tiny tokenizer is trained on
    # the repository's own files, so a change anywhere there changes what the random model samples: a
    # checksum of the text tells any two different rollouts apart, where a length mod 5 once tied all four.
    def by_length(case, traj):
        return Reward(float(sum(map(ord, traj.steps[-1].assistant_text)) % 97) if traj.steps else 0.0)

    cfg = GRPOConfig(model=ModelConfig(name=str(tiny_gemma_path), dtype="float32", max_length=512),
                     prompts=str(prompts), run_dir=str(tmp_path / "run"), max_steps=1, group_size=4,
                     max_new_tokens=12, tools="none", temperature=0.35, top_p=0.8, learning_rate=1e-3)
    cfg.agent.max_rounds = 2
    cfg.agent.protocol = f"official:{REPO / 'tests' / 'helpers' / 'official_standin'}"  # its own sampling: 0.6 / 0.9
    trainer, _ = build_trainer(cfg, reward_fn=by_length)
    decoder = trainer.run.decoder
    assert (decoder.temperature, decoder.top_p, decoder.max_new_tokens) == (0.35, 0.8, 12)
    assert trainer.run.policy.constrained is False  # TRL trains on what the policy itself sampled: no grammar
    assert not any(a.config.tidy_kept_prompt for a in trainer.run.agents)  # the reward sees what it wrote
    assert trainer.args is cfg and trainer.args.temperature == 0.35 and trainer.args.num_generations == 4

    seen = []
    loss = trainer.compute_loss

    def spy(model, inputs, *a, **kw):
        seen.append(inputs)
        return loss(model, inputs, *a, **kw)

    trainer.compute_loss = spy
    train_to_end(trainer, trainer.run.files, None, cfg, "grpo", quiet=True)
    (batch,) = seen
    histories = {tuple(r.completion_ids): r for r in trainer._rows}
    assert len(trainer._rows) == 4
    for ids, cmask, tmask in zip(batch["completion_ids"], batch["completion_mask"], batch["tool_mask"]):
        completion = ids[cmask.bool()].tolist()
        assert tuple(completion) in histories  # the ids TRL trains on are a rollout's sampled history
    assert all(r.advantage is not None for r in trainer._rows)
    logged = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    advantages = [r["advantage"] for line in logged for r in line["rollouts"]]
    assert sorted(advantages) == pytest.approx(sorted(batch["advantages"].tolist()), abs=1e-5)
    rewards = [r["reward"] for line in logged for r in line["rollouts"]]
    assert len(set(rewards)) > 1 and any(a != 0 for a in advantages)
    # env_mask reached TRL as its tool_mask: 1 exactly on the sampled tokens.
    for ids, cmask, tmask in zip(batch["completion_ids"], batch["completion_mask"], batch["tool_mask"]):
        row = histories[tuple(ids[cmask.bool()].tolist())]
        assert tmask[cmask.bool()].tolist() == row.env_mask
    assert any(0 in r.env_mask and 1 in r.env_mask for r in trainer._rows)  # turns and context between them


def test_the_loss_runs_the_head_only_on_the_policys_tokens_and_matches_trls(tiny_gemma_path, tmp_path,
                                                                          monkeypatch):
    """During the loss, the fused head sees only the positions the loss weighs (sampled turns, not the
    tool results between them, not the prompt); the loss and its gradients equal TRL's own path,
    which scores every position and masks afterwards."""
    import torch
    import trl
    import trl.trainer.utils as trl_utils

    from genevolve.training.grpo import GRPOConfig
    from genevolve.training.grpo_trainer import build_trainer
    from genevolve.training.modeling import ModelConfig
    from genevolve.training.rewards import Reward
    from genevolve.training.trl_run import train_to_end

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "r", "question": "a poster of a lighthouse"}) + "\n")
    cfg = GRPOConfig(model=ModelConfig(name=str(tiny_gemma_path), dtype="float32", max_length=512),
                     prompts=str(prompts), run_dir=str(tmp_path / "run"), max_steps=1, group_size=4,
                     max_new_tokens=12, tools="none", learning_rate=1e-3)
    cfg.agent.max_rounds = 3
    # The stand-in protocol answers a broken turn with a correction, so histories hold context.
    cfg.agent.protocol = f"official:{REPO / 'tests' / 'helpers' / 'official_standin'}"
    # A reward that differs across the group, so advantages (and gradients) are not all zero.
    trainer, _ = build_trainer(cfg, reward_fn=lambda case, traj: Reward(
        float(len(traj.steps[-1].assistant_text) % 5) if traj.steps else 0.0))
    seen = []
    loss = trainer.compute_loss
    trainer.compute_loss = lambda model, inputs, *a, **kw: (seen.append(inputs), loss(model, inputs, *a, **kw))[1]
    train_to_end(trainer, trainer.run.files, None, cfg, "grpo", quiet=True)
    (batch,) = seen
    weighed = batch["completion_mask"] * batch["tool_mask"]
    assert 0 < int(weighed.sum()) < int(batch["completion_mask"].sum())  # context between turns exists
    assert not bool(batch["completion_mask"].all())  # rows of different lengths: padding to leave out

    head_rows = []
    kernel = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply",
                        lambda hidden, *a: (head_rows.append(hidden.shape[0]), kernel(hidden, *a))[1])
    model = trainer.model

    def loss_and_grads(compute):
        model.zero_grad()
        value = compute(model, batch)
        value.backward()
        return value.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    ours, ours_grads = loss_and_grads(trainer.compute_loss)
    ours_rows = list(head_rows)  # ours: one call per row, on its tokens without the pads
    theirs, their_grads = loss_and_grads(lambda m, b: trl.GRPOTrainer.compute_loss(trainer, m, b))
    theirs_rows = head_rows[len(ours_rows):]
    assert sum(ours_rows) == int(weighed.sum())  # ours: the weighed positions only
    assert sum(theirs_rows) >= int(batch["completion_mask"].sum())  # TRL's: every completion position at least
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours_grads, their_grads))
    assert any(a != 0 for a in batch["advantages"].tolist()) and any(bool(g.abs().sum() > 0) for g in ours_grads)


def test_group_tool_cache_reuses_results_with_each_trajectorys_own_ids(tmp_path):
    from PIL import Image

    from genevolve.tools.base import Tool, ToolContext, ToolResult
    from genevolve.training.grpo import GroupToolCache
    from genevolve.trajectory import ImageRegistry

    for name, colour in (("a.png", (255, 0, 0)), ("b.png", (0, 0, 255))):
        Image.new("RGB", (8, 8), colour).save(tmp_path / name)

    class LibraryLookup(Tool):  # a real tool over real files: registers what it returns
        name = "image_search"
        calls = 0

        def __call__(self, args, ctx):
            LibraryLookup.calls += 1
            refs = [ctx.registry.register(tmp_path / n, source="library", title=n) for n in ("a.png", "b.png")]
            return ToolResult(text="\n".join(f"{r.img_id}: {r.title}" for r in refs), images=refs)

    cached = GroupToolCache(LibraryLookup())
    first = ToolContext(registry=ImageRegistry(), work_dir=tmp_path)
    r1 = cached({"query": "x"}, first)
    second = ToolContext(registry=ImageRegistry(), work_dir=tmp_path)
    second.registry.register(tmp_path / "b.png", source="user", title="mine")  # b.png is IMG_001 here
    r2 = cached({"query": "x"}, second)
    assert LibraryLookup.calls == 1 and cached.hits == 1
    assert r1.text == "IMG_001: a.png\nIMG_002: b.png"
    assert r2.text == "IMG_002: a.png\nIMG_001: b.png"  # renamed to the second trajectory's ids
    assert {i.img_id for i in r2.images} == {"IMG_001", "IMG_002"} == second.registry.ids()
    cached({"query": "y"}, second)
    assert LibraryLookup.calls == 2


def test_hybrid_reward_scores_a_real_planner_trajectory(tmp_path):
    from genevolve.agent import build_agent
    from genevolve.config import Settings
    from genevolve.training.rewards import HybridReward
    from genevolve.trajectory import Trajectory

    settings = Settings.load(None, policy="planner", offline=True, cache_mode="off")
    agent = build_agent(settings, offline=True)
    case = {"id": "t1", "question": 'A minimalist poster with the title "OPEN DAY" above a red bicycle',
            "category": "text_layout"}
    traj = agent.run(case["question"])
    assert traj.program is not None
    reward = HybridReward(renderer="layout", judge="local", sufficiency="sufficiency", w=0.5)
    r = reward(case, traj)
    assert set(r.components) == {"r_img", "r_text"}
    assert math.isclose(r.total, 0.5 * r.components["r_img"] + 0.5 * r.components["r_text"], abs_tol=1e-9)
    assert r.components["r_text"] in (0.0, 0.25, 0.5, 0.75, 1.0) and 0.0 <= r.components["r_img"] <= 1.0
    assert r.timings["render_s"] > 0 and r.timings["judge_s"] > 0
    empty = reward(case, Trajectory(request=case["question"], termination="format_error"))
    assert empty.total == 0.0


@pytest.mark.slow
def test_grpo_mean_reward_rises_under_a_verifiable_rule(tmp_path):
    """The answer must name the requested colour: a tiny random model learns it in ~25 steps."""
    from genevolve.training.config import config_from_file
    from genevolve.training.grpo import GRPOConfig, train_grpo
    from genevolve.training.metrics import read_metrics

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "r", "question": "draw a red cat", "keywords": ["red"]}\n'
                       '{"id": "b", "question": "draw a blue dog", "keywords": ["blue"]}\n')
    cfg = config_from_file(GRPOConfig, REPO / "configs" / "grpo_tiny_cpu.yaml",
                           prompts=str(prompts), run_dir=str(tmp_path / "run"), max_steps=25,
                           agent={"system_prompt_path": str(REPO / "configs" / "data" / "tiny_system.md")},
                           sdl={"enabled": False}, save_steps=100)
    assert cfg.agent.max_rounds == 1 and cfg.agent.system_prompt_path.endswith("tiny_system.md")
    result = train_grpo(cfg, quiet=True)
    metrics = read_metrics(tmp_path / "run")
    assert result["state"] == "done" and len(metrics) == 25
    rewards = [m["reward_mean"] for m in metrics]
    early, late = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert late >= early + 0.2, rewards
    assert all(m["terminations"] for m in metrics) and metrics[0]["tokens"] > 0
    assert (tmp_path / "run" / "rollouts.jsonl").is_file()


def test_grpo_feeds_an_image_text_policy_the_conversations_pixels(tiny_qwen3vl_path, tmp_path, monkeypatch):
    """TRL's rollout_func path carries no images; ours adds them in compute_loss, so the log-probs
    TRL trains with are those of the token history the policy sampled, image included."""
    import torch
    import trl
    from PIL import Image

    from genevolve.training.data import Encoded
    from genevolve.training.grpo import GRPOConfig
    from genevolve.training.grpo_trainer import build_trainer
    from genevolve.training.modeling import ModelConfig, selected_logprobs
    from genevolve.training.rewards import Reward

    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "ref.png")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "r", "question": "draw this cat in red", "images": [str(tmp_path / "ref.png")]})
                       + "\n")

    def by_length(case, traj):  # a real function of the trajectory, so advantages are not all zero
        return Reward(float(len(traj.steps[-1].assistant_text) % 3) if traj.steps else 0.0)

    cfg = GRPOConfig(model=ModelConfig(name=str(tiny_qwen3vl_path), dtype="float32", max_length=1024),
                     prompts=str(prompts), run_dir=str(tmp_path / "run"), max_steps=1, group_size=2,
                     max_new_tokens=6, tools="none", temperature=1.0, learning_rate=1e-3,
                     save_strategy="no")  # the tiny processor is not one save_pretrained can write
    cfg.agent.max_rounds = 1
    cfg.agent.system_prompt_path = str(REPO / "configs" / "data" / "tiny_system.md")
    trainer, _ = build_trainer(cfg, reward_fn=by_length)
    checked = []
    original = trl.GRPOTrainer.compute_loss

    def spy(self, model, inputs, *a, **kw):  # TRL's loss, as our compute_loss calls it
        out = inputs
        assert out["num_images"] == [1, 1] and out["pixel_values"].shape[0] == out["image_grid_thw"].prod(-1).sum()
        image_id = trainer.run.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        assert bool(((ids == image_id) == out["mm_token_type_ids"].bool()).all())
        mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        keep = out["completion_ids"].size(1)
        vision = {k: out[k] for k in ("pixel_values", "image_grid_thw", "num_images", "mm_token_type_ids")}
        rows = self._batch_rows(out)
        with torch.no_grad():
            trl_logp = self._get_per_token_logps_and_entropies(model, ids, mask, keep, **vision)[0]
            blind = self._get_per_token_logps_and_entropies(model, ids, mask, keep)[0]
            for i, row in enumerate(rows):
                enc = Encoded(input_ids=row.prompt_ids + row.completion_ids,
                              loss_mask=[False] * len(row.prompt_ids) + [bool(m) for m in row.env_mask],
                              decision_mask=[], vision=row.vision, token_types=row.token_types)
                batch = {**enc.model_inputs(), "labels": torch.tensor([enc.labels])}
                ours, _ = selected_logprobs(model, batch, batch["labels"] != -100)
                policy = out["tool_mask"][i].bool() & out["completion_mask"][i].bool()
                assert torch.allclose(trl_logp[i][policy], ours, atol=1e-4), (trl_logp[i][policy], ours)
                assert not torch.allclose(blind[i][policy], ours, atol=1e-4)  # without the pixels they differ
        checked.append(True)
        return original(self, model, inputs, *a, **kw)

    monkeypatch.setattr(trl.GRPOTrainer, "compute_loss", spy)
    trainer.remove_callback(trainer.folder_callback)  # it would ask for the final checkpoint
    trainer.train()
    assert checked == [True]


def test_copying_the_request_earns_clearly_less_than_the_teacher_on_knowledge_cases(tmp_path):
    """The reward pays for relevant research: on knowledge cases a policy that answers at once with
    the request (no search, no reference) scores well below the teacher, and pasting facts about
    something the request does not name scores below adding none."""
    from genevolve.agent import build_agent
    from genevolve.bench.loaders import load_bench
    from genevolve.config import Settings
    from genevolve.program import Program
    from genevolve.training.rewards import HybridReward
    from genevolve.trajectory import Step, Trajectory

    cases = [c for c in load_bench("mini") if c["id"] in ("ka_veh_02", "ka_sci_01", "ka_relic_01", "ka_fig_01")]
    assert len(cases) == 4
    settings = Settings.load(None, policy="planner", offline=True, cache_mode="off")
    agent = build_agent(settings, offline=True)
    reward = HybridReward(renderer="layout", judge="local", sufficiency="sufficiency", w=0.5)
    teacher, copier, paster = [], [], []
    for case in cases:
        traj = agent.run(case["question"])
        assert traj.program is not None, traj.reason
        teacher.append(reward(case, traj).total)
        copy = Trajectory(request=case["question"], termination="answer")
        copy.steps.append(Step(round=1, kind="answer", assistant_text="<answer>…</answer>"))
        copy.program = Program(gen_prompt=case["question"] + " High detail, coherent single image.")
        copier.append(reward(case, copy).total)
        pasted = Trajectory.from_dict(traj.to_dict())
        search = "1. **Golden Gate Bridge** — Its main span is 1,280 metres, the longest suspension span in 1937."
        pasted.steps.insert(0, Step(round=0, kind="tool_call", tool_name="search",
                                    tool_arguments={"queries": ["bridge"]}, tool_text=search))
        pasted.program = Program(gen_prompt=traj.program.gen_prompt + " Its main span is 1,280 metres, the longest "
                                 "suspension span in 1937.", reference_images=traj.program.reference_images)
        paster.append(reward(case, pasted).total)
    mean = lambda xs: sum(xs) / len(xs)
    assert mean(teacher) >= mean(copier) + 0.2, (teacher, copier)
    assert all(p < t for p, t in zip(paster, teacher)), (paster, teacher)


def test_the_grpo_config_is_trls_with_ours_beside_it(tmp_path):
    """Shipped GRPO configs load as a trl.GRPOConfig: TRL's fields by TRL's names, what follows
    from ours set from it, and an unknown (or renamed) key is a one-line error that names it."""
    import trl

    from genevolve.training.config import config_from_file, config_to_dict, describe
    from genevolve.training.grpo import GRPOConfig

    cfg = config_from_file(GRPOConfig, REPO / "configs" / "nano" / "grpo_sdl.yaml")
    assert isinstance(cfg, trl.GRPOConfig)
    assert (cfg.learning_rate, cfg.epsilon, cfg.save_steps, cfg.temperature) == (5.0e-5, 0.2, 2, 1.0)
    assert cfg.num_generations == cfg.group_size == 6 and cfg.per_device_train_batch_size == 6
    assert cfg.max_completion_length == cfg.model.max_length == 2048 and cfg.agent.protocol == "nano"
    assert cfg.output_dir.endswith("checkpoints") and cfg.shuffle_dataset is False
    plain = config_to_dict(cfg)
    assert plain["learning_rate"] == 5.0e-5 and plain["sdl"]["enabled"] is True and plain["model"]["lora"]["r"] == 16
    with pytest.raises(ValueError, match=r"unknown GRPOConfig field\(s\): lr;"):
        config_from_file(GRPOConfig, REPO / "configs" / "grpo_tiny_cpu.yaml", lr=1.0)
    text = describe(GRPOConfig)
    assert "group_size (6): Rollouts per prompt (G)" in text and "learning_rate (1e-06)" in text


def test_a_prompt_pool_makes_a_run_revisit_its_prompts():
    """``prompt_pool: N`` trains on N prompts of the file, picked by the seed, so a run of max_steps
    sees each of them again (SDL's gate needs a request it has distilled a guide for)."""
    from types import SimpleNamespace

    from genevolve.training.grpo_trainer import _dataset, prompt_pool

    prompts = [{"id": str(i), "question": f"request {i}"} for i in range(10)]
    pool = prompt_pool(prompts, 3, seed=0)
    assert len(pool) == 3 and pool == prompt_pool(prompts, 3, seed=0) and pool != prompt_pool(prompts, 3, seed=1)
    assert [int(p["id"]) for p in pool] == sorted(int(p["id"]) for p in pool)  # file order kept
    assert prompt_pool(prompts, None, seed=0) is prompts and prompt_pool(prompts, 99, seed=0) is prompts
    with pytest.raises(ValueError, match="prompt_pool is 0"):
        prompt_pool(prompts, 0, seed=0)
    rows = _dataset(pool, SimpleNamespace(max_steps=6, prompts_per_step=1, seed=0), processes=1)
    seen = [r["prompt"][0]["content"] for r in rows]
    assert len(seen) == 6 and all(seen.count(p["question"]) == 2 for p in pool)


def test_rollouts_log_the_references_a_program_binds_and_the_pictures_tools_showed():
    """The logged last turn is cut at 500 characters, before the answer's reference list: the row
    says in full which shown picture the program bound, so binding can be counted per step."""
    from genevolve.program import Program, Reference
    from genevolve.trajectory import ImageRef, Trajectory
    from genevolve.training.grpo_trainer import rollout_log_row
    from genevolve.training.rewards import Reward

    long_prompt = "A red vintage Vespa scooter parked by a blue door. " * 12
    traj = Trajectory(request="a vintage Vespa scooter", termination="answer",
                      images=[ImageRef("IMG_001", "/u.png", source="user"), ImageRef("IMG_002", "/v.png"),
                              ImageRef("IMG_003", "/w.png")],
                      user_image_ids=["IMG_001"], warnings=["the answer left a shown picture out"],
                      program=Program(gen_prompt=long_prompt, reference_images=[Reference(img_id="IMG_002")]))
    row = rollout_log_row(traj, Reward(0.75))
    assert row["references"] == ["IMG_002"] and row["images_shown"] == ["IMG_002", "IMG_003"]
    assert row["warnings"] == ["the answer left a shown picture out"] and row["program"] == long_prompt
    unanswered = rollout_log_row(Trajectory(request="x", termination="format_error"), Reward(0.0))
    assert unanswered["references"] == [] and unanswered["program"] is None and unanswered["last_turn"] == ""

    # The step's metrics row counts them too, across processes: the user's given and bound, the library's bound.
    from genevolve.training.grpo_trainer import _RolloutStats

    given = Trajectory(request="the cat from the first image on a sofa", termination="answer",
                       images=[ImageRef("IMG_001", "/u.png", source="user"), ImageRef("IMG_002", "/c.png")],
                       user_image_ids=["IMG_001"], program=Program(gen_prompt="a cat on a sofa"))
    one, other = _RolloutStats(), _RolloutStats()
    one.add(traj, Reward(0.75), 10)
    other.add(given, Reward(0.5), 10)
    other.add(Trajectory(request="x", termination="format_error"), Reward(0.0), 3)
    assert _RolloutStats.merge([one, other]).record()["pictures"] == {"user_given": 2, "user_bound": 0,
                                                                        "library_bound": 1}
