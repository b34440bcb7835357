"""GRPO(+SDL) on TRL's ``GRPOTrainer``: our agent rollouts, rewards, SDL term and run folder.

Imported only by ``grpo.train_grpo`` (it pulls in torch, transformers and trl).

How one step maps onto TRL, through its documented seams only
-------------------------------------------------------------
The config *is* a ``trl.GRPOConfig`` (``grpo.GRPOConfig`` subclasses it). The dataset holds
``max_steps`` steps' worth of prompts, shuffled per epoch by seed when it is built, and TRL walks
it in order (``shuffle_dataset: false``): each process gets ``prompts_per_step`` prompts a step,
each repeated G times in a row, so every GRPO group is whole on one process (its tool cache,
reward spread and Decision Guide are local), and a resumed run draws the same prompts.

``rollout_func`` (``_rollout``) rolls each group out in lock step (``group_rollout.GroupDecoder``:
the real agent loop per rollout, the group's turns decoded as one batch on the training weights),
scores each trajectory with our reward, and returns each rollout's token history as TRL wants it:
``prompt_ids``, ``completion_ids`` (every sampled turn and the context between turns),
``logprobs`` (the sampling log-probs; 0 on context) and ``env_mask`` (1 on the sampled tokens).
TRL trains on exactly those ids; the reward function hands TRL the score computed here.

``compute_loss`` (public) receives TRL's shuffled batch: it finds each row's rollout by its ids,
records the advantage TRL computed for it (rollouts.jsonl and the metrics row show what the loss
was weighted by), adds the pixels of image-text rollouts, and adds λ·(masked reverse KL to the
teacher: the guide-bearing prompt ids + the identical completion ids) when SDL has a guide for
the prompt. The group's best/worst pair is distilled into a new guide; guides from all processes
are gathered and written by rank 0 alone, then every process re-reads the buffer.

Run folder: ``trl_run`` (shared with SFT) writes metrics.jsonl, status.json and
``checkpoints/latest`` and resumes from it; GRPO adds rollouts.jsonl (cut back to the
checkpoint's step on resume, as are this run's guides).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass

import torch
import trl

from genevolve.training.grpo import GRPOConfig, GroupToolCache, build_rollout_tools
from genevolve.training.trl_run import RunFolderTrainer


def genevolve_reward(prompts, completions, genevolve_reward=None, **kwargs) -> list[float]:
    """TRL reward function: the score ``_rollout`` computed from the whole trajectory."""
    return [float(r) for r in genevolve_reward]


@dataclass
class _Row:
    """One rollout of a step, as handed to TRL, and what the loss and the logs need of it."""

    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]  # 1 on the completion's sampled tokens, 0 on context
    pair: tuple | None  # (student, teacher) data.Encoded for the SDL term, or None
    vision: dict  # pixel_values, image_grid_thw (image-text policies)
    token_types: list[int] | None  # mm_token_type_ids over prompt + completion
    advantage: float | None = None


class AgentGRPOTrainer(RunFolderTrainer, trl.GRPOTrainer):
    """TRL's GRPOTrainer with lock-step agent rollouts, trajectory rewards and the SDL loss term."""

    progress_field = "reward_mean"

    def __init__(self, *args, run, **kwargs):
        self.run = run  # the _Run: config, agents, decoder, reward, buffer, files
        self._rows: list[_Row] = []
        self._pending = None  # a step's rollout log, finished once TRL's advantages are known
        super().__init__(*args, rollout_func=lambda prompts, trainer: trainer._rollout(prompts), **kwargs)

    # ---------------------------------------------------------------- rollouts
    def _rollout(self, prompts: list) -> dict:
        run, cfg = self.run, self.run.cfg
        G = cfg.group_size
        step = self.state.global_step + 1
        indices = [int(p[0]["case_index"]) for p in prompts]
        if len(indices) % G:
            raise RuntimeError(f"{len(indices)} rollout slots on this process is not a multiple of group_size {G}")
        timings: Counter = Counter()
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "env_mask": [],
                                "genevolve_reward": []}
        self._rows = []
        new_guides, log_lines, stats = [], [], _RolloutStats()
        from trl.models.utils import unwrap_model_for_generation

        # Under DeepSpeed ZeRO-3 the weights are sharded: gather them for the rollouts (TRL's own
        # generation path does the same); with DDP or one process this yields the plain module.
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gather_deepspeed3_params=self.args.ds3_gather_for_generation) as model:
            run.policy.model = model
            was_training = model.training
            model.eval()
            try:
                for g in range(0, len(indices), G):
                    self._rollout_group(indices[g:g + G], step, out, new_guides, log_lines, stats, timings)
            finally:
                model.train(was_training)
        stats.groups = len(indices) // G
        # Rows that can move the weights once their advantage is known: tokens of their own, and
        # an SDL teacher or a KL term to pull on them even at zero advantage.
        pulled = [(any(m), r.pair is not None or cfg.beta > 0) for m, r in zip(out["env_mask"], self._rows)]
        self._pending = (step, new_guides, log_lines, stats, timings, pulled)
        return out

    def _rollout_group(self, indices, step, out, new_guides, log_lines, stats, timings) -> None:
        """One prompt's G rollouts in lock step, scored, handed over as token ids; a guide distilled."""
        run, cfg = self.run, self.run.cfg
        if len(set(indices)) != 1:
            raise RuntimeError(f"a GRPO group was split across prompts {sorted(set(indices))}: the batch "
                               "layout must keep each prompt's G rollouts together")
        case = run.prompts[indices[0]]
        guide = None
        if run.buffer is not None:
            t0 = time.perf_counter()
            guide, _cos, passes = run.buffer.retrieve(case["question"], bump=False)
            guide = guide if passes else None
            stats.hits += int(passes)
            timings["retrieve_s"] += time.perf_counter() - t0
        rollouts = run.group_rollouts(case, timings)
        stats.generation_s += run.last_generation_s
        trajs = [t for t, _ in rollouts]
        rewards = []
        for traj in trajs:
            r = run.reward_fn(case, traj)
            for k, v in r.timings.items():
                timings[k] += v
            rewards.append(r)
        teacher_prompt = None
        for (traj, history), r in zip(rollouts, rewards):
            row = run.row(history, traj)
            if guide is not None:
                if teacher_prompt is None:  # the same opening for the whole group
                    teacher_prompt = run.teacher_prompt_ids(history, traj, guide)
                row.pair = run.pair(row, history, teacher_prompt)
            self._rows.append(row)
            out["prompt_ids"].append(row.prompt_ids)
            out["completion_ids"].append(row.completion_ids)
            out["env_mask"].append(row.env_mask)
            out["logprobs"].append(history.logprobs[:len(row.completion_ids)] or [0.0])
            out["genevolve_reward"].append(float(r.total))
            stats.add(traj, r, sum(out["env_mask"][-1]))
        log_lines.append({"step": step, "prompt_id": case.get("id"), "question": case["question"],
                          "guide": guide["id"] if guide else None, "rank": self.accelerator.process_index,
                          "rollouts": [rollout_log_row(t, r) for t, r in zip(trajs, rewards)]})
        if run.buffer is not None:
            from genevolve.training.sdl import pick_pair

            pair = pick_pair([r.total for r in rewards], cfg.sdl.delta_min)
            if pair is not None:
                t0 = time.perf_counter()
                b, w = pair
                new = run.distiller(case["question"], trajs[b], trajs[w], rewards[b], rewards[w])
                new.setdefault("meta", {}).update({"run": run.run_id, "step": step})
                new_guides.append(new)
                timings["distill_s"] += time.perf_counter() - t0

    def _finish_step(self) -> None:
        """Once the step's loss has seen every row: log the advantages TRL weighted them with."""
        step, new_guides, log_lines, stats, timings, pulled = self._pending
        self._pending = None
        advantages = [r.advantage for r in self._rows]
        if any(a is None for a in advantages):
            raise RuntimeError("a rollout of this step never reached the loss: its advantage is unknown")
        stats.advantages = list(advantages)
        stats.trained = sum(1 for a, (has_tokens, pull) in zip(advantages, pulled)
                            if has_tokens and (abs(a) > 0 or pull))
        rest = iter(advantages)
        for line in log_lines:
            for rollout in line["rollouts"]:
                rollout["advantage"] = next(rest)
        self._publish(step, new_guides, log_lines, stats, timings)

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
    def _batch_rows(self, inputs) -> list[_Row]:
        """The rollout behind each row of TRL's (shuffled) batch, found by its prompt and completion ids.
        Rows with identical ids are interchangeable: same prompt, same tokens, same teacher."""
        by_key: dict[tuple, list[_Row]] = {}
        for r in self._rows:
            by_key.setdefault((tuple(r.prompt_ids), tuple(r.completion_ids)), []).append(r)
        rows = []
        for p, pm, c, cm in zip(inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"],
                                inputs["completion_mask"]):
            key = (tuple(p[pm.bool()].tolist()), tuple(c[cm.bool()].tolist()))
            candidates = by_key.get(key)
            if not candidates:
                raise RuntimeError("a row of TRL's batch matches none of this step's rollouts")
            rows.append(candidates.pop(0))
        return rows

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rows = self._batch_rows(inputs)
        for row, a in zip(rows, inputs["advantages"].tolist()):
            if row.advantage is None:  # the advantage this generation's loss is weighted by
                row.advantage = a
        if any(r.vision for r in rows):
            inputs = {**inputs, **_vision_inputs(rows, inputs, self.accelerator.device)}
        # The loss weighs only the policy's own tokens: score only those (see _get_per_token_logps...).
        weighed = inputs["completion_mask"] * inputs.get("tool_mask", torch.ones_like(inputs["completion_mask"]))
        self._scored = weighed if "tool_mask" in inputs else None
        try:
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            self._scored = None
        sdl = self.run.cfg.sdl
        if not sdl.enabled:
            return loss
        from genevolve.training.sdl import sdl_loss

        t0 = time.perf_counter()
        mask = weighed
        old = inputs.get("old_per_token_logps")
        total = None
        local = torch.zeros(4, dtype=torch.float64)  # sum of SDL losses, sum of KLs, kept tokens, samples
        for i, row in enumerate(rows):
            if row.pair is None:
                continue
            student, teacher = row.pair
            old_i = old[i][mask[i].bool()] if old is not None else None
            terms = sdl_loss(model, student, teacher, fraction=sdl.top_fraction, old_logp=old_i, rho_max=sdl.rho_max)
            if terms is None:
                continue
            total = terms.loss if total is None else total + terms.loss
            local += torch.tensor([float(terms.loss.detach()), terms.kl, terms.kept, 1.0], dtype=torch.float64)
        if total is not None:
            # Per rollout, as the clipped objective: mean over the batch, scaled for accumulation.
            loss = loss + sdl.lam * total / len(rows) / self.current_gradient_accumulation_steps
        reduced = self.accelerator.reduce(local.to(self.accelerator.device), reduction="sum").cpu()
        acc = self._sdl_acc
        acc += reduced
        self._sdl_time += time.perf_counter() - t0
        return loss

    _scored = None  # completion positions the loss weighs, while compute_loss runs

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                           **vision):
        """TRL's log-probs, with the head run only at the positions the loss weighs.

        TRL scores every completion position: the tool results and rendered context between the
        policy's turns too, which the loss then masks out. Their head rows are most of the work
        here (Gemma 3's head is 262,144 wide and the context often outnumbers the turns), so during
        the loss the labels of unweighed positions are dropped before the head, which skips them
        when it compacts (``_cpu_logprob_path``; CUDA compacts already). Unweighed positions come
        back 0, as TRL returns padding. Text-only rows; image-text rows keep TRL's path."""
        scored = self._scored
        if scored is None or compute_aux_loss or any(v is not None for v in vision.values()):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                **vision)
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        labels[:, :-logits_to_keep] = -100
        labels[:, -logits_to_keep:] = labels[:, -logits_to_keep:].masked_fill(scored == 0, -100)
        if input_ids.device.type == "cpu":
            return self._unpadded_logps(model, input_ids, attention_mask, labels, logits_to_keep, compute_entropy)
        batch_size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = start + batch_size
            with self.accelerator.autocast():
                out = model(input_ids=input_ids[start:end], attention_mask=attention_mask[start:end],
                            labels=labels[start:end], fused_lm_head=True)
            logps.append(out.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                entropies.append(out.entropy[:, -logits_to_keep:])
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None

    def _unpadded_logps(self, model, input_ids, attention_mask, labels, logits_to_keep, compute_entropy):
        """One row at a time, without its padding. TRL pads a group to its longest history (prompt
        left, completion right), and the backbone's forward, backward and checkpointed recompute
        all run over the pads; on a CPU a batch buys no speed, so each row runs alone on its own
        tokens (one contiguous span) and its log-probs are padded back to TRL's layout. Positions
        restart at 0 per row, which rotary attention does not see (only offsets matter)."""
        import torch.nn.functional as F

        width = input_ids.size(1)
        logps, entropies = [], []
        for i in range(input_ids.size(0)):
            real = attention_mask[i].nonzero().squeeze(1)
            start, end = (int(real[0]), int(real[-1]) + 1) if real.numel() else (0, 0)
            if end - start < 2 or not bool(attention_mask[i, start:end].all()):  # not one span: keep the pads
                start, end = 0, width
            with self.accelerator.autocast():
                out = model(input_ids=input_ids[i:i + 1, start:end], attention_mask=attention_mask[i:i + 1, start:end],
                            labels=labels[i:i + 1, start:end], fused_lm_head=True)
            logps.append(F.pad(out.log_probs, (start, width - end))[:, -logits_to_keep:])
            if compute_entropy:
                entropies.append(F.pad(out.entropy, (start, width - end))[:, -logits_to_keep:])
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None

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
        if self._pending is not None:  # collective: every rank logs the same step
            self._finish_step()
        record = dict(self._step_extras)
        sdl = self.sdl_record()
        record.update(sdl)
        if "timings" in record and sdl:
            record["timings"] = {**record["timings"], "teacher_sdl_s": round(self._sdl_time, 4)}
        return record


def _vision_inputs(rows: list[_Row], inputs: dict, device) -> dict:
    """Pixel values and image-token types of the rows' token histories, laid out as TRL pads
    (prompt left, completion right). TRL's rollout_func path carries no images, so an image-text
    policy would otherwise be trained on image placeholder tokens without pixels."""
    if not all("image_grid_thw" in r.vision for r in rows if r.vision):
        raise ValueError("GRPO of image-text policies supports Qwen-style processors (image_grid_thw)")
    P, C = inputs["prompt_ids"].size(1), inputs["completion_ids"].size(1)
    types = torch.zeros((len(rows), P + C), dtype=torch.long)
    for i, r in enumerate(rows):
        t = r.token_types or [0] * (len(r.prompt_ids) + len(r.completion_ids))
        first = len(r.prompt_ids)
        types[i, P - first:P] = torch.tensor(t[:first], dtype=torch.long)
        types[i, P:P + len(t) - first] = torch.tensor(t[first:], dtype=torch.long)
    with_images = [r for r in rows if r.vision]
    return {"pixel_values": torch.cat([r.vision["pixel_values"] for r in with_images]).to(device),
            "image_grid_thw": torch.cat([r.vision["image_grid_thw"] for r in with_images]).to(device),
            "num_images": [int(r.vision["image_grid_thw"].shape[0]) if r.vision else 0 for r in rows],
            "mm_token_type_ids": types.to(device)}


def rollout_log_row(traj, reward) -> dict:
    """One rollout as rollouts.jsonl keeps it: what it earned, what it did and what it wrote, in full
    for the program's references (the last turn is cut, and the answer's reference list comes after
    its gen_prompt, so a cut turn cannot say whether a picture was bound)."""
    program, users = traj.program, set(traj.user_image_ids)
    return {"reward": reward.total, "components": reward.components, "advantage": None,
            "termination": traj.termination,
            "tools": [s.tool_name for s in traj.tool_calls()],
            # per check, what R_text paid: which research the reward saw
            "credit": (reward.info.get("sufficiency_details") or {}).get("credit"),
            "program": program.gen_prompt if program else None,
            "references": [ref.img_id for ref in program.reference_images] if program else [],
            "images_shown": [im.img_id for im in traj.images if im.img_id not in users],  # by tools
            "warnings": list(traj.warnings),
            "last_turn": (traj.steps[-1].assistant_text if traj.steps else "")[:500]}


class _RolloutStats:
    """What one process saw in a step's rollouts; merged across processes for the metrics row."""

    def __init__(self):
        self.rewards: list[float] = []
        self.components: dict[str, list[float]] = {}
        self.advantages: list[float] = []
        self.tools: Counter = Counter()
        self.skills: Counter = Counter()
        self.terminations: Counter = Counter()
        # Pictures per step: the user's given and bound, library pictures bound. GRPO on a pool that
        # rarely asked for a picture unlearned binding one; this is where that shows first.
        self.pictures: Counter = Counter()
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
        users = set(traj.user_image_ids)
        bound = {ref.img_id for ref in traj.program.reference_images} if traj.program else set()
        self.pictures.update(user_given=len(users), user_bound=len(users & bound), library_bound=len(bound - users))
        self.tokens += policy_tokens

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
            out.pictures.update(p.pictures)
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
                "skill_counts": dict(self.skills), "terminations": dict(self.terminations),
                "pictures": {k: self.pictures[k] for k in ("user_given", "user_bound", "library_bound")}}


# ---------------------------------------------------------------- the run

class _Run:
    """Everything the rollouts need, built once per process."""

    def __init__(self, cfg: GRPOConfig, files, *, reward_fn=None, tools=None, rank: int = 0):
        from genevolve.agent import Agent, AgentConfig
        from genevolve.policies.local import LocalPolicy
        from genevolve.training.data import load_prompts
        from genevolve.training.group_rollout import GroupDecoder, RolloutSlot
        from genevolve.training.modeling import load_for_training
        from genevolve.training.rewards import make_reward

        self.cfg = cfg
        self.files = files
        if not cfg.prompts:
            raise ValueError("prompts is empty: point it at a JSONL of bench rows ({\"question\": ...})")
        self.prompts = prompt_pool(load_prompts(cfg.prompts), cfg.prompt_pool, cfg.seed)
        self.model, self.tokenizer, self.processor = load_for_training(cfg.model)
        from genevolve.policies.cpu_speed import PatchedModules, pack_linears

        # The rollouts decode a few rows a token on a bf16 base the optimizer never changes
        # (LoRA): pack it once for oneDNN, as nano's inference does, so the lm_head is not
        # reordered for every token. The update's passes (grad on, or many rows) stay plain.
        self.packed = PatchedModules([]) if torch.cuda.is_available() else pack_linears(self.model, frozen_only=True)
        self.reward_fn = reward_fn or make_reward(
            cfg.reward, image_dir=str(self.files.dir / "images") if cfg.save_images else None)
        self.tools = tools if tools is not None else build_rollout_tools(cfg)
        # Rollouts run on the unwrapped model: the same parameters the optimizer updates. The policy
        # holds the model, tokenizer and chat template; the group's turns are decoded by the
        # GroupDecoder, unconstrained (a grammar mask would train on tokens the model did not
        # choose, and the format errors are what it learns from) and at exactly the config's
        # temperature/top_p, which TRL divides the logits by when it scores these tokens: no
        # conversation profile's sampling replaces them.
        self.policy = LocalPolicy(self.model, self.tokenizer, self.processor, name="grpo-rollout",
                                  max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                  constrained=False)
        self.decoder = GroupDecoder(self.policy, temperature=cfg.temperature, top_p=cfg.top_p,
                                    max_new_tokens=cfg.max_new_tokens)
        # The reward scores the program the model wrote: no tidying of a kept gen_prompt here.
        agent_cfg = AgentConfig(**{**vars(cfg.agent), "offline": cfg.tools != "online", "tidy_kept_prompt": False})
        # Scratch files of the tools (downloads, copies); one folder per rank, so ranks never share one.
        work = self.files.dir / "rollout_files" / (f"rank-{rank}" if rank else "")
        self.agents = [Agent(RolloutSlot(self.decoder, i), self.tools, agent_cfg, work_dir=work)
                       for i in range(cfg.group_size)]
        self.last_generation_s = 0.0
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
        """The G rollouts of ``case`` in lock step: ``[(trajectory, token history)]``."""
        for t in self.tools.values():
            if isinstance(t, GroupToolCache):
                t.clear()
        before = self.decoder.generation_s
        rollouts = self.decoder.rollout(self.agents, case["question"], case.get("images", []))
        self.last_generation_s = self.decoder.generation_s - before
        timings["generation_s"] += self.last_generation_s
        timings["tools_s"] += sum(s.tool_s for traj, _ in rollouts for s in traj.steps)
        timings["tool_cache_hits"] += sum(t.hits for t in self.tools.values() if isinstance(t, GroupToolCache))
        return rollouts

    def row(self, history, traj) -> _Row:
        """A rollout as TRL's row: its ids, cut to model.max_length (the prompt is kept whole)."""
        keep = max(self.cfg.model.max_length - len(history.prompt_ids), 1)
        # A rollout that wrote nothing (an error before its first turn): one context token stands in
        # as the completion, masked out, so the row carries no gradient but keeps its reward.
        completion = history.completion_ids[:keep] or [self.tokenizer.pad_token_id]
        env_mask = history.env_mask[:keep] or [0]
        ids = history.prompt_ids + completion
        types = self._token_types(ids) if history.vision else None
        return _Row(list(history.prompt_ids), list(completion), list(env_mask), None, dict(history.vision), types)

    def _token_types(self, ids: list[int]) -> list[int]:
        image_token = getattr(self.processor, "image_token_id", None)
        return [int(t == image_token) for t in ids]

    def teacher_prompt_ids(self, history, traj, guide) -> list[int]:
        """The opening the rollouts saw, with the Decision Guide in its system prompt, as ids."""
        from genevolve.training.sdl import with_guide

        return list(self.policy.encode(with_guide(history.prompt_messages, guide), traj.images))

    def pair(self, row: _Row, history, teacher_prompt: list[int]):
        """SDL's (student, teacher): the student's ids, and the teacher's prompt + the identical
        completion ids; the masks mark the sampled tokens and, inside them, the decision tokens."""
        from genevolve.training.data import Encoded

        n = len(row.completion_ids)
        sampled = [bool(m) for m in history.env_mask[:n]] + [False] * (n - len(history.env_mask[:n]))
        decision = [bool(d) for d in history.decision_mask[:n]] + [False] * (n - len(history.decision_mask[:n]))
        if not any(decision):
            return None

        def encoded(prompt: list[int]) -> Encoded:
            ids = prompt + row.completion_ids
            return Encoded(input_ids=ids, loss_mask=[False] * len(prompt) + sampled,
                           decision_mask=[False] * len(prompt) + decision, vision=dict(row.vision),
                           token_types=self._token_types(ids) if row.vision else None)

        return encoded(row.prompt_ids), encoded(teacher_prompt)


def prompt_pool(prompts: list[dict], size: int | None, seed: int) -> list[dict]:
    """``size`` of ``prompts`` drawn by ``seed``, in file order (all when ``size`` is None or covers them)."""
    if size is None or size >= len(prompts):
        return prompts
    if size < 1:
        raise ValueError(f"prompt_pool is {size}: give a positive number of prompts, or leave it out for all")
    g = torch.Generator().manual_seed(seed * 7_919 + 17)
    keep = sorted(torch.randperm(len(prompts), generator=g)[:size].tolist())
    return [prompts[i] for i in keep]


def _dataset(prompts: list[dict], cfg: GRPOConfig, processes: int):
    """``max_steps`` steps' worth of prompts, each epoch in its own order drawn from (seed, epoch):
    TRL walks it in order, so a resumed run, which skips the steps it has done, draws the same
    prompts. Each prompt carries its case's index for ``_rollout``."""
    from datasets import Dataset

    need = cfg.max_steps * cfg.prompts_per_step * processes
    order: list[int] = []
    for epoch in range(math.ceil(need / len(prompts))):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order += torch.randperm(len(prompts), generator=g).tolist()
    return Dataset.from_list([{"prompt": [{"role": "user", "content": prompts[i]["question"], "case_index": i}]}
                              for i in order[:need]])


def run_grpo(cfg: GRPOConfig, *, reward_fn=None, tools=None, quiet: bool = False, probe=None) -> dict:
    from genevolve.training.stopping import GracefulStop
    from genevolve.training.trl_run import train_to_end

    with GracefulStop() as stop:
        trainer, ckpt = build_trainer(cfg, reward_fn=reward_fn, tools=tools, stop=stop)
        return train_to_end(trainer, trainer.run.files, ckpt, cfg, "grpo" + ("+sdl" if cfg.sdl.enabled else ""),
                            quiet=quiet, probe=probe)


# Tokens per tile of TRL's chunked log-prob pass on CPU (TRL's default, 4,096, is sized for a GPU).
# Each tile materialises several tokens x 32,768 fp32 temporaries; at 4,096 tokens they are 512 MiB
# each and fall out of the CPU caches. On this 2-core CPU, 4,096 positions forward + backward with
# Gemma 3 270M's head: 105.7 s and 7.0 GB peak at 4,096 -> 48.6 s and 1.9 GB at 512
# (benchmarks/cpu_allocator.py measures it against the defaults).
CPU_LOGPROB_TILE_TOKENS = 512


def _cpu_logprob_path() -> None:
    import trl.kernels.chunked_logprob as chunked  # read by its forward and backward at each call
    import trl.trainer.utils as trl_utils

    chunked.TOKEN_CHUNK_SIZE = min(chunked.TOKEN_CHUNK_SIZE, CPU_LOGPROB_TILE_TOKENS)
    # TRL's fused head scores only the labelled positions where Triton runs, and every position
    # elsewhere so that Neuron-like compilers see fixed tile shapes. Eager CPU compiles nothing:
    # let it compact too, or the prompt and every masked position pay the 262,144-wide head.
    # Only the fused head's choice moves; the kernel still takes its torch tiles on CPU.
    triton_or_cpu = trl_utils._use_triton
    if not getattr(triton_or_cpu, "compacts_on_cpu", False):
        def compact_on_cpu(device: torch.device) -> bool:
            return device.type == "cpu" or triton_or_cpu(device)

        compact_on_cpu.compacts_on_cpu = True
        trl_utils._use_triton = compact_on_cpu


def build_trainer(cfg: GRPOConfig, *, reward_fn=None, tools=None, stop=None):
    """The trainer for ``cfg``, its run folder prepared for a fresh start or a resume:
    ``(trainer, checkpoint to resume from or None)``."""
    import os
    import warnings

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
    fork = None
    if cfg.fork_from:
        from genevolve.training.fork import fork_run_folder

        def fork(files, write):
            if not cfg.resume:
                raise ValueError("fork_from needs resume: true (the fork is resumed from its copied checkpoint)")
            guide_store = None
            if cfg.sdl.enabled:
                from genevolve.config import Settings
                from genevolve.store import Store

                guide_store = Store(cfg.sdl.store_path or Settings.load(cfg.settings).store_path)
            fork_run_folder(cfg.fork_from, files, sdl_enabled=cfg.sdl.enabled, guide_store=guide_store, write=write)
    state, files, ckpt, step = open_run_folder(cfg, "grpo", ("rollouts.jsonl",), seed_folder=fork)
    cfg.output_dir = str(files.checkpoints)  # TRL's checkpoints live in the run folder
    main = state.is_main_process
    seed_all(cfg.seed)
    if not torch.cuda.is_available():
        _cpu_logprob_path()
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
    if run.processor is not None and (cfg.beta > 0 or cfg.num_iterations > 1):
        # TRL's no-grad passes (reference and old log-probs) see no pixels on the rollout_func path;
        # compute_loss adds them only to the loss's own forward pass.
        raise ValueError("GRPO of an image-text policy supports beta: 0 and num_iterations: 1 only")
    dataset = _dataset(run.prompts, cfg, state.num_processes)
    # Seed last: loading models above may draw random numbers (module init), and a second run in
    # the same process finds them cached; sampling must start from the same state.
    seed_all(cfg.seed)
    callback = RunFolderCallback(files, cfg, stop if stop is not None else GracefulStop())
    trainer = AgentGRPOTrainer(model=run.model, reward_funcs=[genevolve_reward],
                               args=cfg, train_dataset=dataset,
                               processing_class=run.processor or run.tokenizer, callbacks=[callback], run=run)
    attach(trainer, callback, step)
    return trainer, ckpt
