"""GRPO(+SDL) on TRL's ``GRPOTrainer``: our agent rollouts, rewards, SDL term and run folder.

Imported only by ``grpo.train_grpo`` (it pulls in torch, transformers and trl).

How one step maps onto TRL
--------------------------
TRL's sampler gives each process ``prompts_per_step`` prompts, each repeated G times in a row
(``per_device_train_batch_size = prompts_per_step * group_size``, one generation per step), so
every GRPO group is whole on one process: its tool cache, its reward spread and its Decision
Guide are local. TRL gathers the rewards across processes to compute advantages.

``_rollout`` (TRL's ``rollout_func``) runs ``genevolve.agent.Agent`` G times per prompt with the
unwrapped model, scores each trajectory with our reward function, and renders the conversation
with ``ConversationEncoder``: everything before the first assistant token is the prompt, the rest
the completion, and ``env_mask`` marks the policy's own tokens (its turns and end-of-turn
markers); tool responses and the template's turn headers between turns are context. TRL's
reward function then returns the score computed here.

SDL: with a guide retrieved for the prompt (cosine >= gate), each rollout of the group also gets
a teacher rendering (the guide in the system prompt; identical completion tokens), and
``compute_loss`` adds λ·mean over the batch of the masked reverse KL (``sdl.sdl_loss``), whose
forward pass goes through the same wrapped model's decoder. The group's best/worst pair is
distilled into a new guide; guides from all processes are gathered and written by rank 0 alone,
then every process re-reads the buffer, so the next step retrieves from the same buffer on
every rank.

Run folder: ``trl_run`` (shared with SFT) writes metrics.jsonl, status.json and
``checkpoints/latest`` and resumes from it; GRPO adds rollouts.jsonl (cut back to the
checkpoint's step on resume, as are this run's guides).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import torch
import trl

from genevolve.training.grpo import GRPOConfig, GroupToolCache, build_rollout_tools
from genevolve.training.trl_run import RunFolderTrainer


def genevolve_reward(prompts, completions, genevolve_reward=None, **kwargs) -> list[float]:
    """TRL reward function: the score ``_rollout`` computed from the whole trajectory."""
    return [float(r) for r in genevolve_reward]


class AgentGRPOTrainer(RunFolderTrainer, trl.GRPOTrainer):
    """TRL's GRPOTrainer with agent rollouts, trajectory rewards and the SDL loss term."""

    progress_field = "reward_mean"

    def __init__(self, *args, run, **kwargs):
        self.run = run  # the _Run: config, agent, encoder, reward, buffer, files
        self._batch_rows: list[dict] = []
        self._pending = None  # a step's rollout log, finished once TRL has computed its advantages
        super().__init__(*args, rollout_func=lambda prompts, trainer: trainer._rollout(prompts), **kwargs)

    def _get_train_sampler(self, dataset=None):
        # TRL's RepeatSampler draws each epoch's order from one generator that a resumed run
        # recreates at epoch 0; seeding it by (seed, epoch) makes the resumed order the same.
        sampler = super()._get_train_sampler(dataset)
        sampler.__class__ = _EpochSeededRepeatSampler
        return sampler

    # ---------------------------------------------------------------- rollouts
    def _generate_and_score_completions(self, inputs):
        self._batch_rows = inputs  # the dataset rows (case_index) behind the prompts _rollout gets
        self._sdl_pairs: list = []
        self._row_encodings: list = []
        self._prompt_lengths: list[int] = []
        output = super()._generate_and_score_completions(inputs)
        # The advantages TRL computed (across processes, this process's rows in order) are the
        # ones logged: rollouts.jsonl and the metrics row show what the loss was weighted by.
        self._finish_step(output["advantages"].tolist())
        output["sdl_pairs"] = self._sdl_pairs  # a list: TRL shuffles and splits it with the tensors
        vision = self._vision_inputs(output)
        if vision:
            self._add_vision(output, vision)
        return output

    def _vision_inputs(self, output) -> dict:
        """Pixel values and image-token types of the rollouts' conversations, laid out as TRL pads
        (prompt left, completion right). TRL's rollout_func path carries no images, so an
        image-text policy would otherwise be trained on image placeholder tokens without pixels."""
        encs = self._row_encodings
        if not any(e.vision for e in encs):
            return {}
        if not all("image_grid_thw" in e.vision for e in encs if e.vision):
            raise ValueError("GRPO of image-text policies supports Qwen-style processors (image_grid_thw)")
        device = self.accelerator.device
        P, C = output["prompt_ids"].size(1), output["completion_ids"].size(1)
        types = torch.zeros((len(encs), P + C), dtype=torch.long)
        for i, e in enumerate(encs):
            t = e.token_types or [0] * len(e)
            first = self._prompt_lengths[i]
            types[i, P - first:P] = torch.tensor(t[:first], dtype=torch.long)
            types[i, P:P + len(t) - first] = torch.tensor(t[first:], dtype=torch.long)
        with_images = [e for e in encs if e.vision]
        return {"pixel_values": torch.cat([e.vision["pixel_values"] for e in with_images]).to(device),
                "image_grid_thw": torch.cat([e.vision["image_grid_thw"] for e in with_images]).to(device),
                "num_images": [int(e.vision["image_grid_thw"].shape[0]) if e.vision else 0 for e in encs],
                "mm_token_type_ids": types.to(device)}

    def _add_vision(self, output: dict, vision: dict) -> None:
        """Put the vision inputs into the batch, and redo the no-grad passes TRL made without them."""
        output.update(vision)
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        keep = output["completion_ids"].size(1)
        with torch.no_grad():
            if "old_per_token_logps" in output:
                output["old_per_token_logps"] = self._get_per_token_logps_and_entropies(
                    self.model, ids, mask, keep, **vision)[0]
            if "ref_per_token_logps" in output:
                if self.ref_model is not None:
                    output["ref_per_token_logps"] = self._get_per_token_logps_and_entropies(
                        self.ref_model, ids, mask, keep, **vision)[0]
                else:
                    from trl.trainer.grpo_trainer import use_adapter

                    unwrapped = self.accelerator.unwrap_model(self.model)
                    with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                        output["ref_per_token_logps"] = self._get_per_token_logps_and_entropies(
                            self.model, ids, mask, keep, **vision)[0]

    def _rollout(self, prompts: list) -> dict:
        run, cfg = self.run, self.run.cfg
        G = cfg.group_size
        step = self.state.global_step + 1
        rows = self._batch_rows
        if len(rows) % G:
            raise RuntimeError(f"{len(rows)} rollout slots on this process is not a multiple of group_size {G}")
        timings: Counter = Counter()
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "env_mask": [], "genevolve_reward": []}
        pairs, new_guides, log_lines, stats = [], [], [], _RolloutStats()
        from trl.models.utils import unwrap_model_for_generation

        # Under DeepSpeed ZeRO-3 the weights are sharded: gather them for the rollouts (TRL's own
        # generation path does the same); with DDP or one process this yields the plain module.
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gather_deepspeed3_params=self.args.ds3_gather_for_generation) as model:
            run.policy.model = model
            was_training = model.training
            model.eval()
            try:
                self._rollout_groups(rows, G, step, out, pairs, new_guides, log_lines, stats, timings)
            finally:
                model.train(was_training)
        stats.groups = len(rows) // G
        self._sdl_pairs = pairs
        # Rows that can move the weights once their advantage is known: tokens of their own, and
        # an SDL teacher or a KL term to pull on them even at zero advantage.
        self._pending = (step, new_guides, log_lines, stats, timings,
                         [(any(m), p is not None or cfg.beta > 0) for m, p in zip(out["env_mask"], pairs)])
        return {**out, "logprobs": None}

    def _finish_step(self, advantages: list[float]) -> None:
        step, new_guides, log_lines, stats, timings, rows = self._pending
        self._pending = None
        if len(advantages) != len(rows):
            raise RuntimeError(f"TRL returned {len(advantages)} advantages for {len(rows)} rollouts on this process")
        stats.advantages = list(advantages)
        stats.trained = sum(1 for a, (has_tokens, pulled) in zip(advantages, rows)
                            if has_tokens and (abs(a) > 0 or pulled))
        rest = iter(advantages)
        for line in log_lines:
            for rollout in line["rollouts"]:
                rollout["advantage"] = next(rest)
        self._publish(step, new_guides, log_lines, stats, timings)

    def _rollout_groups(self, rows, G, step, out, pairs, new_guides, log_lines, stats, timings) -> None:
        """G agent rollouts per prompt, scored, rendered to token ids; guides distilled per group."""
        run, cfg = self.run, self.run.cfg
        for g in range(0, len(rows), G):
            indices = {int(r["case_index"]) for r in rows[g:g + G]}
            if len(indices) != 1:
                raise RuntimeError(f"a GRPO group was split across prompts {sorted(indices)}: the batch "
                                   "layout must keep each prompt's G rollouts together")
            case = run.prompts[indices.pop()]
            guide = None
            if run.buffer is not None:
                t0 = time.perf_counter()
                guide, _cos, passes = run.buffer.retrieve(case["question"], bump=False)
                guide = guide if passes else None
                stats.hits += int(passes)
                timings["retrieve_s"] += time.perf_counter() - t0
            trajs = run.group_rollouts(case, timings)
            rewards = []
            for traj in trajs:
                r = run.reward_fn(case, traj)
                for k, v in r.timings.items():
                    timings[k] += v
                rewards.append(r)
            totals = [r.total for r in rewards]
            t0 = time.perf_counter()
            for traj, r in zip(trajs, rewards):
                student = run.encode(traj)
                teacher = run.encode(traj, guide) if guide is not None else None
                prompt_ids, completion_ids, mask = _split_prompt(student)
                self._row_encodings.append(student)
                self._prompt_lengths.append(len(prompt_ids))
                out["prompt_ids"].append(prompt_ids)
                out["completion_ids"].append(completion_ids)
                out["env_mask"].append(mask)
                out["genevolve_reward"].append(float(r.total))
                pairs.append((student, teacher) if teacher is not None and any(student.decision_mask) else None)
                stats.add(traj, r, sum(mask))
            timings["encode_s"] += time.perf_counter() - t0
            log_lines.append({"step": step, "prompt_id": case.get("id"), "question": case["question"],
                              "guide": guide["id"] if guide else None, "rank": self.accelerator.process_index,
                              "rollouts": [{"reward": r.total, "components": r.components, "advantage": None,
                                            "termination": t.termination,
                                            "tools": [s.tool_name for s in t.tool_calls()],
                                            "program": t.program.gen_prompt if t.program else None,
                                            "last_turn": (t.steps[-1].assistant_text if t.steps else "")[:500]}
                                           for t, r in zip(trajs, rewards)]})
            if run.buffer is not None:
                from genevolve.training.sdl import pick_pair

                pair = pick_pair(totals, cfg.sdl.delta_min)
                if pair is not None:
                    t0 = time.perf_counter()
                    b, w = pair
                    new = run.distiller(case["question"], trajs[b], trajs[w], rewards[b], rewards[w])
                    new.setdefault("meta", {}).update({"run": run.run_id, "step": step})
                    new_guides.append(new)
                    timings["distill_s"] += time.perf_counter() - t0

    def _publish(self, step: int, new_guides: list, log_lines: list, stats, timings: Counter) -> None:
        """Gather what every process produced; rank 0 alone writes guides and rollouts.jsonl."""
        from accelerate.utils import gather_object

        run = self.run
        if self.accelerator.num_processes > 1:
            new_guides = gather_object(new_guides)
            log_lines = gather_object(log_lines)
            all_stats = gather_object([stats])
            all_timings = gather_object([dict(timings)])
        else:
            all_stats, all_timings = [stats], [dict(timings)]
        main = self.accelerator.is_main_process
        if run.buffer is not None and new_guides:
            if main:
                for guide in new_guides:
                    run.buffer.add(guide)
            self.accelerator.wait_for_everyone()  # written before anyone re-reads the buffer
            run.buffer.refresh()
        if main:
            for line in log_lines:
                run.files.append("rollouts.jsonl", line)
        merged = _RolloutStats.merge(all_stats)
        summed: Counter = Counter()
        for t in all_timings:
            summed.update(t)
        record = merged.record()
        record["tool_cache_hits"] = int(summed.pop("tool_cache_hits", 0))
        record["timings"] = {k: round(v, 4) for k, v in summed.items()}
        if run.buffer is not None:
            record.update({"guide_hit_rate": merged.hits / max(merged.groups, 1), "guides_added": len(new_guides),
                           "buffer_size": len(run.buffer)})
        self._step_extras = record

    # ---------------------------------------------------------------- loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        sdl = self.run.cfg.sdl
        pairs = inputs.get("sdl_pairs")
        if not sdl.enabled or pairs is None:
            return loss
        from genevolve.training.sdl import sdl_loss

        t0 = time.perf_counter()
        mask = inputs["completion_mask"] * inputs.get("tool_mask", torch.ones_like(inputs["completion_mask"]))
        old = inputs.get("old_per_token_logps")
        total = None
        local = torch.zeros(4, dtype=torch.float64)  # sum of SDL losses, sum of KLs, kept tokens, samples
        for i, pair in enumerate(pairs):
            if pair is None:
                continue
            student, teacher = pair
            old_i = old[i][mask[i].bool()] if old is not None else None
            terms = sdl_loss(model, student, teacher, fraction=sdl.top_fraction, old_logp=old_i, rho_max=sdl.rho_max)
            if terms is None:
                continue
            total = terms.loss if total is None else total + terms.loss
            local += torch.tensor([float(terms.loss.detach()), terms.kl, terms.kept, 1.0], dtype=torch.float64)
        if total is not None:
            # Per rollout, as the clipped objective: mean over the batch, scaled for accumulation.
            loss = loss + sdl.lam * total / len(pairs) / self.current_gradient_accumulation_steps
        reduced = self.accelerator.reduce(local.to(self.accelerator.device), reduction="sum").cpu()
        acc = self._sdl_acc
        acc += reduced
        self._sdl_time += time.perf_counter() - t0
        return loss

    _sdl_acc = None
    _sdl_time = 0.0
    _step_extras: dict = {}

    def training_step(self, model, inputs, num_items_in_batch):
        self._sdl_acc = torch.zeros(4, dtype=torch.float64)
        self._sdl_time = 0.0
        return super().training_step(model, inputs, num_items_in_batch)

    def sdl_record(self) -> dict:
        if not self.run.cfg.sdl.enabled or self._sdl_acc is None:
            return {}
        s_loss, s_kl, kept, n = self._sdl_acc.tolist()
        return {"sdl_loss": s_loss / n if n else None, "sdl_kl": s_kl / n if n else None,
                "sdl_kept_tokens": int(kept), "sdl_samples": int(n)}

    def run_folder_extras(self) -> dict:
        """Our reward stats (over the whole trajectory, not TRL's decode) and the SDL term's."""
        record = dict(self._step_extras)
        sdl = self.sdl_record()
        record.update(sdl)
        if "timings" in record and sdl:
            record["timings"] = {**record["timings"], "teacher_sdl_s": round(self._sdl_time, 4)}
        return record


class _EpochSeededRepeatSampler(trl.trainer.utils.RepeatSampler):
    """RepeatSampler whose order is a function of (seed, epoch); the Trainer calls set_epoch."""

    def set_epoch(self, epoch: int) -> None:
        self.generator = torch.Generator()
        self.generator.manual_seed((self.seed or 0) * 1_000_003 + epoch)


class _RolloutStats:
    """What one process saw in a step's rollouts; merged across processes for the metrics row."""

    def __init__(self):
        self.rewards: list[float] = []
        self.components: dict[str, list[float]] = {}
        self.advantages: list[float] = []
        self.tools: Counter = Counter()
        self.skills: Counter = Counter()
        self.terminations: Counter = Counter()
        self.tokens = 0
        self.generation_s = 0.0
        self.hits = 0
        self.groups = 0
        self.trained = 0

    def add(self, traj, reward, policy_tokens: int) -> None:
        self.rewards.append(float(reward.total))
        for k, v in reward.components.items():
            self.components.setdefault(k, []).append(float(v))
        self.tools.update(s.tool_name for s in traj.tool_calls())
        self.skills.update(traj.skills_used())
        self.terminations[traj.termination] += 1
        self.tokens += policy_tokens
        self.generation_s += sum(s.policy_s for s in traj.steps)

    @classmethod
    def merge(cls, parts: list) -> "_RolloutStats":
        out = cls()
        for p in parts:
            out.rewards += p.rewards
            for k, v in p.components.items():
                out.components.setdefault(k, []).extend(v)
            out.advantages += p.advantages
            out.tools.update(p.tools)
            out.skills.update(p.skills)
            out.terminations.update(p.terminations)
            out.tokens += p.tokens
            out.generation_s += p.generation_s
            out.hits += p.hits
            out.groups += p.groups
            out.trained += p.trained
        return out

    def record(self) -> dict:
        from genevolve.training.metrics import mean_std

        r_mean, r_std = mean_std(self.rewards)
        a_mean, a_std = mean_std(self.advantages)
        return {"reward_mean": r_mean, "reward_std": r_std,
                **{f"{k}_mean": sum(v) / len(v) for k, v in self.components.items()},
                "adv_mean": a_mean, "adv_std": a_std,
                "adv_abs_mean": sum(abs(a) for a in self.advantages) / max(len(self.advantages), 1),
                "trained_samples": self.trained,
                "tokens": self.tokens, "tokens_per_s": self.tokens / max(self.generation_s, 1e-9),
                "tool_calls": sum(self.tools.values()), "tool_counts": dict(self.tools),
                "skill_counts": dict(self.skills), "terminations": dict(self.terminations)}


def _split_prompt(enc) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, completion ids, env_mask): the completion starts at the first policy token."""
    mask = enc.loss_mask
    first = next((i for i, m in enumerate(mask) if m), None)
    if first is None or first == 0:
        # The policy wrote nothing (an error before its first turn): one context token stands in
        # as the completion, masked out, so the row carries no gradient but keeps its reward.
        first = max(len(enc.input_ids) - 1, 1)
    return list(enc.input_ids[:first]), list(enc.input_ids[first:]), [int(m) for m in mask[first:]]


# ---------------------------------------------------------------- the run

class _Run:
    """Everything the rollouts need, built once per process."""

    def __init__(self, cfg: GRPOConfig, files, *, reward_fn=None, tools=None, rank: int = 0):
        from genevolve.agent import Agent, AgentConfig
        from genevolve.policies.local import LocalPolicy
        from genevolve.training.data import ConversationEncoder, load_prompts
        from genevolve.training.modeling import load_for_training
        from genevolve.training.rewards import make_reward

        self.cfg = cfg
        self.files = files
        if not cfg.prompts:
            raise ValueError("prompts is empty: point it at a JSONL of bench rows ({\"question\": ...})")
        self.prompts = load_prompts(cfg.prompts)
        self.model, self.tokenizer, self.processor = load_for_training(cfg.model)
        self.encoder = ConversationEncoder(self.tokenizer, self.processor, max_length=cfg.model.max_length)
        self.reward_fn = reward_fn or make_reward(
            cfg.reward, image_dir=str(self.files.dir / "images") if cfg.save_images else None)
        self.tools = tools if tools is not None else build_rollout_tools(cfg)
        # Rollouts run on the unwrapped model: the same parameters the optimizer updates.
        # Unconstrained: the tokens TRL scores must be samples of the policy itself (a grammar mask
        # would train on tokens the model did not choose), and the format errors are what it learns from.
        self.policy = LocalPolicy(self.model, self.tokenizer, self.processor, name="grpo-rollout",
                                  max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                  constrained=False)
        # TRL divides the logits by cfg.temperature when it scores these tokens, so rollouts must be
        # sampled at exactly the config's settings: no conversation profile may replace them.
        self.policy.explicit_sampling = {"temperature", "top_p", "max_new_tokens"}
        agent_cfg = AgentConfig(**{**vars(cfg.agent), "offline": cfg.tools != "online"})
        # Scratch files of the tools (downloads, copies); one folder per rank, so ranks never share one.
        work = self.files.dir / "rollout_files" / (f"rank-{rank}" if rank else "")
        self.agent = Agent(self.policy, self.tools, agent_cfg, work_dir=work)
        self.run_id = self.files.dir.resolve().as_posix()
        self.buffer = self.distiller = None
        if cfg.sdl.enabled:
            from genevolve.config import Settings
            from genevolve.store import Store
            from genevolve.training.sdl import GuideBuffer, make_distiller

            store_path = cfg.sdl.store_path or Settings.load(cfg.settings).store_path
            self.buffer = GuideBuffer(Store(store_path), cfg.sdl.embedder, cfg.sdl.capacity, cfg.sdl.gate)
            self.distiller = make_distiller(cfg.sdl.distiller)
            self.buffer.embed(["load the embedding model now, not mid-step"])

    def group_rollouts(self, case: dict, timings: Counter) -> list:
        self.policy.reset_cache()  # weights changed since the last group: cached keys are stale
        for t in self.tools.values():
            if isinstance(t, GroupToolCache):
                t.clear()
        trajs = []
        for _ in range(self.cfg.group_size):
            traj = self.agent.run(case["question"], case.get("images", []))
            timings["generation_s"] += sum(s.policy_s for s in traj.steps)
            timings["tools_s"] += sum(s.tool_s for s in traj.steps)
            trajs.append(traj)
        self.policy.reset_cache()
        timings["tool_cache_hits"] += sum(t.hits for t in self.tools.values() if isinstance(t, GroupToolCache))
        return trajs

    def encode(self, traj, guide=None):
        from genevolve.training.sdl import with_guide

        rec = traj.to_sft_record()
        messages = rec["messages"] if guide is None else with_guide(rec["messages"], guide)
        return self.encoder.encode(messages, rec["images"])


def _trl_args(cfg: GRPOConfig, output_dir: Path) -> trl.GRPOConfig:
    from genevolve.training.trl_run import base_args

    args = base_args(cfg, output_dir)
    args.update(
        per_device_train_batch_size=cfg.prompts_per_step * cfg.group_size, gradient_accumulation_steps=1,
        steps_per_generation=1, num_generations=cfg.group_size, num_iterations=cfg.ppo_epochs,
        epsilon=cfg.clip_eps, beta=cfg.beta, scale_rewards="group" if cfg.scale_rewards else "none",
        loss_type="grpo", temperature=cfg.temperature, top_p=cfg.top_p, max_completion_length=cfg.model.max_length,
        use_vllm=cfg.use_vllm, vllm_mode=cfg.vllm_mode,
    )
    args.update(cfg.trl)
    return trl.GRPOConfig(**args)


def run_grpo(cfg: GRPOConfig, *, reward_fn=None, tools=None, quiet: bool = False, probe=None) -> dict:
    from genevolve.training.stopping import GracefulStop
    from genevolve.training.trl_run import train_to_end

    with GracefulStop() as stop:
        trainer, ckpt = build_trainer(cfg, reward_fn=reward_fn, tools=tools, stop=stop)
        return train_to_end(trainer, trainer.run.files, ckpt, cfg, "grpo" + ("+sdl" if cfg.sdl.enabled else ""),
                            quiet=quiet, probe=probe)


def build_trainer(cfg: GRPOConfig, *, reward_fn=None, tools=None, stop=None):
    """The trainer for ``cfg``, its run folder prepared for a fresh start or a resume:
    ``(trainer, checkpoint to resume from or None)``."""
    import os
    import warnings

    from datasets import Dataset

    from genevolve.training.rng import seed_all
    from genevolve.training.stopping import GracefulStop
    from genevolve.training.trl_run import RunFolderCallback, attach, open_run_folder

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is TRL-experimental; we pin trl
    # TRL toggles checkpointing around no-grad passes with the names transformers 5 deprecates.
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*deprecated", category=FutureWarning)
    if cfg.use_vllm:
        # Measured blocker, kept ours: an agent rollout asks the policy for a turn, runs tools, asks
        # again, a different number of turns per trajectory. TRL's vLLM generation (colocate or
        # server) is one collective call per step over all processes with a fixed number of
        # completions per prompt, so a per-turn call from each trajectory would deadlock the ranks.
        # It needs a lock-step turn batcher across ranks, which is not built yet.
        raise ValueError("use_vllm: vLLM rollouts for multi-turn agent trajectories are not supported yet; "
                         "set use_vllm: false (rollouts then run on the training weights with transformers "
                         "generate, gathered under ZeRO-3)")
    state, files, ckpt, step = open_run_folder(cfg, "grpo", ("rollouts.jsonl",))
    main = state.is_main_process
    seed_all(cfg.seed)
    run = _Run(cfg, files, reward_fn=reward_fn, tools=tools, rank=state.process_index)
    if main and run.buffer is not None:
        run.buffer.forget(run.run_id, after_step=step)  # guides of steps that will be redone
    state.wait_for_everyone()
    if run.buffer is not None:
        run.buffer.refresh()
    per_step = cfg.prompts_per_step * state.num_processes
    if len(run.prompts) < per_step:
        raise ValueError(f"{cfg.prompts} has {len(run.prompts)} prompt(s); a step takes prompts_per_step x processes "
                         f"= {per_step}: add prompts or lower prompts_per_step")
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": c["question"]}], "case_index": i}
                                 for i, c in enumerate(run.prompts)])
    # Seed last: loading models above may draw random numbers (module init), and a second run in
    # the same process finds them cached; sampling must start from the same state.
    seed_all(cfg.seed)
    callback = RunFolderCallback(files, cfg, stop if stop is not None else GracefulStop())
    trainer = AgentGRPOTrainer(model=run.model, reward_funcs=[genevolve_reward],
                               args=_trl_args(cfg, files.checkpoints), train_dataset=dataset,
                               processing_class=run.processor or run.tokenizer, callbacks=[callback], run=run)
    attach(trainer, callback, step)
    return trainer, ckpt
