"""GRPO with the hybrid reward, plus SDL when ``sdl.enabled``.

One step, per prompt: sample G trajectories with the real agent loop (tools execute between
turns; a group cache makes the G rollouts of one prompt pay for each distinct tool call once),
score each (``rewards.py``), turn rewards into group-relative advantages, and update with the
clipped-ratio objective on assistant tokens only (tool responses, system and user text are
context). ``beta > 0`` adds the k3 KL to the reference (the adapter switched off for LoRA, a
frozen copy otherwise). With SDL, the top-1 Decision Guide for the prompt (cosine >= gate)
goes into the teacher's system prompt and λ·SDL is added per rollout; the group's best/worst
pair is distilled into a new guide for later steps.

Log-probs are recomputed by a forward pass over the whole conversation (we need gradients
anyway), so what is trained is exactly what ``data.ConversationEncoder`` renders.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from genevolve.program import IMG_ID_RE
from genevolve.tools.base import Tool, ToolContext, ToolResult
from genevolve.training.modeling import ModelConfig


@dataclass
class SDLConfig:
    enabled: bool = False
    lam: float = 0.1  # λ: weight of the SDL term in the total loss
    delta_min: float = 0.2  # minimum best-worst reward gap to distil a guide
    top_fraction: float = 0.1  # decision tokens kept per sequence
    gate: float = 0.84
    capacity: int = 500
    embedder: str = "all-MiniLM-L6-v2"
    distiller: str | None = None  # openai:<model>@<base_url> writes guides; None: contrastive, offline
    store_path: str | None = None  # None: the settings' store (the studio shows these guides)
    rho_max: float = 2.0


@dataclass
class GRPOConfig:
    NESTED: ClassVar[dict] = {"sdl": SDLConfig}

    model: ModelConfig = field(default_factory=ModelConfig)
    prompts: str = ""  # JSONL of bench rows ({"question" | "prompt", ...}); keywords for the rule reward
    run_dir: str = "runs/grpo"
    seed: int = 0
    max_steps: int = 100
    prompts_per_step: int = 1
    group_size: int = 6
    lr: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    clip_eps: float = 0.2
    beta: float = 0.0  # KL to the reference policy
    ppo_epochs: int = 1  # updates per batch of rollouts (>1 makes the old-policy ratio bite)
    scale_rewards: bool = True  # divide advantages by the group std
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    max_rounds: int = 11
    max_tool_calls: int = 10
    max_references: int = 2
    system_prompt_path: str | None = None
    protocol: str | None = None  # conversation profile of the rollouts (nano: the compact one); None: ours
    settings: str | None = None  # a Settings file (corpus, library, tool cache); None: defaults
    tools: str = "offline"  # offline: real tools on local backends | online: web backends (keys from env) | none
    reward: dict = field(default_factory=lambda: {"kind": "hybrid", "w": 0.5, "judge": "local",
                                                  "renderer": "layout", "sufficiency": "sufficiency"})
    sdl: SDLConfig = field(default_factory=SDLConfig)
    save_every: int = 10
    keep_checkpoints: int = 3
    resume: bool = True
    stop_after: int | None = None
    save_images: bool = False


# ---------------------------------------------------------------- tools shared by a group

class GroupToolCache(Tool):
    """Memoises a tool's results for the G rollouts of one prompt.

    A hit re-registers the result's images in the calling trajectory's registry and renames
    the IMG ids in the text, so every trajectory keeps its own consistent ids.
    """

    def __init__(self, tool: Tool):
        self.tool = tool
        self.name = tool.name
        self.description = getattr(tool, "description", "")
        self.backend_name = getattr(tool, "backend_name", tool.name)
        self.memo: dict[str, ToolResult] = {}
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self.memo.clear()

    def __call__(self, args: dict, ctx: ToolContext) -> ToolResult:
        key = json.dumps(args, sort_keys=True, ensure_ascii=False, default=str)
        hit = self.memo.get(key)
        if hit is None:
            self.misses += 1
            result = self.tool(args, ctx)
            self.memo[key] = result
            return result
        self.hits += 1
        mapping, images = {}, []
        for ref in hit.images:
            new = ctx.registry.register(ref.path, source=ref.source, title=ref.title, caption=ref.caption, url=ref.url)
            mapping[ref.img_id] = new.img_id
            images.append(new)
        text = IMG_ID_RE.sub(lambda m: mapping.get(m.group(0), m.group(0)), hit.text)
        return ToolResult(text=text, images=images, backend=hit.backend, error=hit.error,
                          meta={**hit.meta, "group_cache": True})


def build_rollout_tools(cfg: GRPOConfig) -> dict[str, GroupToolCache]:
    if cfg.tools == "none":
        return {}
    if cfg.tools not in ("offline", "online"):
        raise ValueError(f"tools must be 'offline', 'online' or 'none', got {cfg.tools!r}")
    from genevolve.config import Settings
    from genevolve.tools import build_tools

    offline = cfg.tools == "offline"
    settings = Settings.load(cfg.settings, offline=offline)
    return {name: GroupToolCache(t) for name, t in build_tools(settings, offline=offline).items()}


# ---------------------------------------------------------------- math

def group_advantages(rewards: list[float], scale: bool = True, eps: float = 1e-4) -> list[float]:
    """(r − mean) / std within one group (std of a constant group: advantages are all 0)."""
    m = sum(rewards) / len(rewards)
    if not scale:
        return [r - m for r in rewards]
    sd = (sum((r - m) ** 2 for r in rewards) / len(rewards)) ** 0.5
    return [(r - m) / (sd + eps) for r in rewards]


def clipped_objective(logp, old_logp, advantage: float, clip_eps: float):
    """Per-sequence mean of −min(ρA, clip(ρ, 1±ε)A)."""
    import torch

    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantage
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantage
    return -torch.minimum(unclipped, clipped).mean(), float(((ratio - 1).abs() > clip_eps).float().mean())


# ---------------------------------------------------------------- the trainer

@dataclass
class Sample:
    case: dict
    trajectory: Any
    reward: Any
    advantage: float
    student: Any = None  # data.Encoded
    teacher: Any = None  # data.Encoded with the guide, when SDL applies
    old_logp: Any = None
    ref_logp: Any = None
    guide: dict | None = None  # the Decision Guide the teacher sees (SDL), if any


class GRPOTrainer:
    def __init__(self, cfg: GRPOConfig, *, reward_fn=None, tools: dict | None = None, quiet: bool = False):
        self.cfg = cfg
        self.quiet = quiet
        self._reward_fn = reward_fn
        self._tools = tools
        self.timings: Counter = Counter()

    # -- setup
    def setup(self) -> None:

        from genevolve.agent import Agent, AgentConfig
        from genevolve.policies.local import LocalPolicy
        from genevolve.training.common import Distributed, make_optimizer, seed_all
        from genevolve.training.data import ConversationEncoder, load_prompts
        from genevolve.training.metrics import RunFiles
        from genevolve.training.modeling import load_for_training, trainable_parameters
        from genevolve.training.rewards import make_reward

        cfg = self.cfg
        self.dist = Distributed()
        self.files = RunFiles(cfg.run_dir)
        seed_all(cfg.seed)
        if not cfg.prompts:
            raise ValueError("prompts is empty: point it at a JSONL of bench rows ({\"question\": ...})")
        self.prompts = load_prompts(cfg.prompts)
        self.model, self.tokenizer, self.processor = load_for_training(cfg.model)
        self.encoder = ConversationEncoder(self.tokenizer, self.processor, max_length=cfg.model.max_length)
        self.reward_fn = self._reward_fn or make_reward(
            cfg.reward, image_dir=str(self.files.dir / "images") if cfg.save_images else None)
        self.tools = self._tools if self._tools is not None else build_rollout_tools(cfg)
        self.params = trainable_parameters(self.model)
        self.optimizer, self.scheduler = make_optimizer(self.params, cfg.lr, cfg.weight_decay, cfg.warmup_steps,
                                                        cfg.max_steps)
        # Rollouts run on the unwrapped model (the same parameters the optimizer updates).
        self.policy = LocalPolicy(self.model, self.tokenizer, self.processor, name="grpo-rollout",
                                  max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
        agent_cfg = AgentConfig(max_rounds=cfg.max_rounds, max_tool_calls=cfg.max_tool_calls,
                                max_references=cfg.max_references, system_prompt_path=cfg.system_prompt_path,
                                offline=cfg.tools != "online", protocol=cfg.protocol)
        self.agent = Agent(self.policy, self.tools, agent_cfg, work_dir=self.files.dir / "rollout_files")
        self.ref_model = None
        if cfg.beta > 0 and not cfg.model.lora:
            import copy

            self.ref_model = copy.deepcopy(self.model).eval()
            for p in self.ref_model.parameters():
                p.requires_grad_(False)
        self.buffer = self.distiller = None
        if cfg.sdl.enabled:
            from genevolve.config import Settings
            from genevolve.store import Store
            from genevolve.training.sdl import GuideBuffer, make_distiller

            store_path = cfg.sdl.store_path or Settings.load(cfg.settings).store_path
            self.store = Store(store_path)
            self.buffer = GuideBuffer(self.store, cfg.sdl.embedder, cfg.sdl.capacity, cfg.sdl.gate)
            self.distiller = make_distiller(cfg.sdl.distiller)
            self.buffer.embed(["load the embedding model now, not mid-step"])
        self.run_id = self.files.dir.resolve().as_posix()
        # Seed last: loading models above may draw random numbers (module init), and a second
        # run in the same process finds them cached; sampling must start from the same state.
        seed_all(cfg.seed)

    # -- one step
    def rollouts(self, case: dict) -> list:
        self.policy.reset_cache()  # weights changed since the last group: cached keys are stale
        for t in self.tools.values():
            if isinstance(t, GroupToolCache):
                t.clear()
        trajs = []
        self.model.eval()
        for _ in range(self.cfg.group_size):
            traj = self.agent.run(case["question"], case.get("images", []))
            self.timings["generation_s"] += sum(s.policy_s for s in traj.steps)
            self.timings["tools_s"] += sum(s.tool_s for s in traj.steps)
            trajs.append(traj)
        self.policy.reset_cache()
        return trajs

    def _encode(self, traj, guide=None):
        from genevolve.training.sdl import with_guide

        rec = traj.to_sft_record()
        messages = rec["messages"] if guide is None else with_guide(rec["messages"], guide)
        return self.encoder.encode(messages, rec["images"])

    def _assistant_logp(self, model, enc, hidden=None):
        import torch

        from genevolve.training.modeling import hidden_states, logits_at, target_positions
        from trl.trainer.utils import selective_log_softmax

        if hidden is None:
            hidden = hidden_states(model, enc.model_inputs())[0]
        ids = torch.tensor([enc.input_ids], device=hidden.device)
        pred = target_positions(torch.tensor([enc.loss_mask], device=hidden.device))[0]
        targets = ids[0, 1:][pred[:-1]]
        return selective_log_softmax(logits_at(model, hidden[pred]), targets), hidden

    def step(self, step: int) -> dict:
        """Collect G rollouts per prompt, score them, update once; returns the metrics record."""
        t_step = time.perf_counter()
        self.timings.clear()
        collected = self.collect(step)
        return self.update(collected, step, t_step)

    def collect(self, step: int) -> dict:
        """Rollouts, rewards, advantages, guide retrieval and distillation for one step's prompts."""
        from genevolve.training.sdl import pick_pair

        cfg = self.cfg
        cases = self._cases_for(step)
        samples: list[Sample] = []
        hits = added = 0
        rollout_log = []
        for case in cases:
            guide = None
            if self.buffer is not None:
                t0 = time.perf_counter()
                guide, cos, passes = self.buffer.retrieve(case["question"])
                self.timings["retrieve_s"] += time.perf_counter() - t0
                guide = guide if passes else None
                hits += int(passes)
            trajs = self.rollouts(case)
            rewards = []
            for traj in trajs:
                r = self.reward_fn(case, traj)
                for k, v in r.timings.items():
                    self.timings[k] += v
                rewards.append(r)
            adv = group_advantages([r.total for r in rewards], cfg.scale_rewards)
            for traj, r, a in zip(trajs, rewards, adv):
                samples.append(Sample(case, traj, r, a))
            rollout_log.append({"step": step, "prompt_id": case.get("id"), "question": case["question"],
                                "guide": guide["id"] if guide else None,
                                "rollouts": [{"reward": r.total, "components": r.components, "advantage": a,
                                              "termination": t.termination, "tools": [s.tool_name for s in t.tool_calls()],
                                              "program": t.program.gen_prompt if t.program else None,
                                              "last_turn": (t.steps[-1].assistant_text if t.steps else "")[:500]}
                                             for t, r, a in zip(trajs, rewards, adv)]})
            for s in samples[-len(trajs):]:
                s.guide = guide
            if self.buffer is not None:
                pair = pick_pair([r.total for r in rewards], cfg.sdl.delta_min)
                if pair is not None:
                    t0 = time.perf_counter()
                    b, w = pair
                    new = self.distiller(case["question"], trajs[b], trajs[w], rewards[b], rewards[w])
                    new.setdefault("meta", {}).update({"run": self.run_id, "step": step})
                    self.buffer.add(new)
                    added += 1
                    self.timings["distill_s"] += time.perf_counter() - t0

        if self.dist.is_main:
            for line in rollout_log:
                self.files.append("rollouts.jsonl", line)
        return {"samples": samples, "cases": cases, "hits": hits, "added": added}

    def update(self, collected: dict, step: int, t_step: float) -> dict:
        """The policy update on collected samples (clipped ratio + β·KL + λ·SDL) and the step's metrics."""
        import torch

        from genevolve.training.metrics import mean_std
        from genevolve.training.sdl import sdl_loss

        cfg = self.cfg
        samples, cases = collected["samples"], collected["cases"]
        hits, added = collected["hits"], collected["added"]
        # Which samples carry a gradient: a non-zero advantage, a teacher, or a KL anchor.
        active = []
        t0 = time.perf_counter()
        for s in samples:
            guide = s.guide
            if s.advantage == 0 and guide is None and cfg.beta == 0:
                continue
            s.student = self._encode(s.trajectory)
            if not any(s.student.loss_mask):
                continue
            if guide is not None:
                s.teacher = self._encode(s.trajectory, guide)
            active.append(s)
        self.timings["encode_s"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        with torch.no_grad():
            for s in active:
                s.old_logp = self._assistant_logp(self.model, s.student)[0]
                if cfg.beta > 0:
                    if self.ref_model is not None:
                        s.ref_logp = self._assistant_logp(self.ref_model, s.student)[0]
                    else:
                        with self.dist.unwrap(self.model).disable_adapter():
                            s.ref_logp = self._assistant_logp(self.model, s.student)[0]
        self.timings["old_logp_s"] += time.perf_counter() - t0

        self.model.train()
        totals = Counter()
        grad_norm = 0.0
        for _ in range(cfg.ppo_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for s in active:
                t0 = time.perf_counter()
                logp, hidden = self._assistant_logp(self.model, s.student)
                pg, clip_frac = clipped_objective(logp, s.old_logp, s.advantage, cfg.clip_eps)
                loss = pg
                totals["pg_loss"] += float(pg.detach())
                totals["clip_frac"] += clip_frac
                if s.ref_logp is not None:
                    d = s.ref_logp - logp
                    kl = (torch.exp(d) - d - 1).mean()
                    loss = loss + cfg.beta * kl
                    totals["kl_ref"] += float(kl.detach())
                self.timings["forward_backward_s"] += time.perf_counter() - t0
                if s.teacher is not None:
                    t1 = time.perf_counter()
                    terms = sdl_loss(self.model, s.student, s.teacher, fraction=cfg.sdl.top_fraction,
                                     old_logp=s.old_logp, rho_max=cfg.sdl.rho_max, student_hidden=hidden)
                    self.timings["teacher_sdl_s"] += time.perf_counter() - t1
                    if terms is not None:
                        loss = loss + cfg.sdl.lam * terms.loss
                        totals["sdl_loss"] += float(terms.loss.detach())
                        totals["sdl_kl"] += terms.kl
                        totals["sdl_samples"] += 1
                        totals["sdl_kept_tokens"] += terms.kept
                t0 = time.perf_counter()
                self.dist.backward(loss / max(len(active), 1))
                totals["loss"] += float(loss.detach())
                self.timings["forward_backward_s"] += time.perf_counter() - t0
            if active:
                grad_norm = self.dist.clip_grad_norm(self.model, self.params, cfg.max_grad_norm)
                self.optimizer.step()
        if active:
            self.scheduler.step()

        rewards = [s.reward.total for s in samples]
        r_mean, r_std = mean_std(rewards)
        a_mean, a_std = mean_std([s.advantage for s in samples])
        comps: dict[str, list[float]] = {}
        for s in samples:
            for k, v in s.reward.components.items():
                comps.setdefault(k, []).append(v)
        tools = Counter(st.tool_name for s in samples for st in s.trajectory.tool_calls())
        skills = Counter(k for s in samples for k in s.trajectory.skills_used())
        n_epochs_active = max(len(active), 1) * cfg.ppo_epochs
        gen_tokens = 0
        for s in samples:
            enc = s.student if s.student is not None else None
            if enc is None:
                enc = self._encode(s.trajectory)
            gen_tokens += sum(enc.loss_mask)
        step_s = time.perf_counter() - t_step
        record = {
            "step": step, "loss": totals["loss"] / n_epochs_active, "pg_loss": totals["pg_loss"] / n_epochs_active,
            "kl_ref": totals["kl_ref"] / n_epochs_active if cfg.beta > 0 else None,
            "reward_mean": r_mean, "reward_std": r_std,
            **{f"{k}_mean": sum(v) / len(v) for k, v in comps.items()},
            "adv_mean": a_mean, "adv_std": a_std, "adv_abs_mean": sum(abs(s.advantage) for s in samples) / len(samples),
            "clip_frac": totals["clip_frac"] / n_epochs_active, "trained_samples": len(active),
            "lr": self.scheduler.get_last_lr()[0], "grad_norm": grad_norm,
            "tokens": gen_tokens, "tokens_per_s": gen_tokens / max(self.timings["generation_s"], 1e-9),
            "tool_calls": sum(tools.values()), "tool_counts": dict(tools), "skill_counts": dict(skills),
            "terminations": dict(Counter(s.trajectory.termination for s in samples)),
            "step_s": step_s, "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
        if self.buffer is not None:
            record.update({
                "sdl_loss": totals["sdl_loss"] / max(totals["sdl_samples"], 1) if totals["sdl_samples"] else None,
                "sdl_kl": totals["sdl_kl"] / max(totals["sdl_samples"], 1) if totals["sdl_samples"] else None,
                "sdl_kept_tokens": totals["sdl_kept_tokens"],
                "guide_hit_rate": hits / len(cases), "guides_added": added, "buffer_size": len(self.buffer)})
        group_hits = sum(t.hits for t in self.tools.values() if isinstance(t, GroupToolCache))
        record["tool_cache_hits"] = group_hits
        return record

    def _cases_for(self, step: int) -> list[dict]:
        from genevolve.training.data import epoch_order

        n = len(self.prompts)
        out = []
        per_step = self.cfg.prompts_per_step
        for j in range(per_step):  # each process takes its own slice of the prompt stream
            i = ((step - 1) * self.dist.world + self.dist.rank) * per_step + j
            epoch, k = divmod(i, n)
            out.append(self.prompts[epoch_order(n, self.cfg.seed, epoch)[k]])
        return out

    # -- the loop
    def train(self) -> dict:
        from genevolve.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
        from genevolve.training.common import GracefulStop, config_to_dict
        from genevolve.training.metrics import progress

        cfg = self.cfg
        self.setup()
        main = self.dist.is_main
        if main:
            self.files.save_config({"trainer": "grpo", **config_to_dict(cfg)})
        step = 0
        ckpt = latest_checkpoint(self.files.checkpoints) if cfg.resume else None
        if ckpt is not None:
            step = load_checkpoint(ckpt, self.model, self.optimizer, self.scheduler)["step"]
            if main:
                self.files.truncate_metrics(step)
                self._forget_guides_after(step)
        self.model, self.optimizer, self.scheduler = self.dist.prepare(self.model, self.optimizer, self.scheduler)
        bar = progress(cfg.max_steps, step, "grpo" + ("+sdl" if cfg.sdl.enabled else "")) \
            if not self.quiet and main else None
        if main:
            self.files.status("running", step=step, total_steps=cfg.max_steps)
        state, ran = "done", 0
        with GracefulStop() as stop:
            while step < cfg.max_steps:
                record = self.step(step + 1)
                step += 1
                ran += 1
                if main:
                    self.files.log(record)
                interrupted = stop.requested or (cfg.stop_after is not None and ran >= cfg.stop_after)
                if step % cfg.save_every == 0 or step == cfg.max_steps or interrupted:
                    save_checkpoint(self.files.checkpoints, step, self.model, self.optimizer, self.scheduler,
                                    {}, self.tokenizer, keep=cfg.keep_checkpoints, dist=self.dist)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(reward=f"{record['reward_mean']:.3f}")
                if main:
                    self.files.status("running", step=step, total_steps=cfg.max_steps,
                                      reward_mean=record["reward_mean"])
                if interrupted:
                    state = "stopped"
                    break
        if bar is not None:
            bar.close()
        if main:
            self.files.status(state, step=step, total_steps=cfg.max_steps)
        return {"state": state, "step": step, "run_dir": str(self.files.dir)}

    def _forget_guides_after(self, step: int) -> None:
        """Guides this run wrote after its checkpoint belong to steps that will be redone."""
        if self.buffer is None:
            return
        with self.store.connect() as db:
            db.execute("DELETE FROM guides WHERE json_extract(meta, '$.run') = ? AND json_extract(meta, '$.step') > ?",
                       (self.run_id, step))
        self.buffer._index = None


def train_grpo(cfg: GRPOConfig, *, reward_fn=None, tools=None, quiet: bool = False) -> dict:
    """Run (or resume) GRPO; any error marks ``status.json`` failed (with the message) and propagates."""
    from genevolve.training.metrics import RunFiles

    try:
        return GRPOTrainer(cfg, reward_fn=reward_fn, tools=tools, quiet=quiet).train()
    except Exception as exc:
        RunFiles(cfg.run_dir).status("failed", message=f"{type(exc).__name__}: {exc}"[:2000])
        raise
