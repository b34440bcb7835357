"""GRPO with the hybrid reward, plus SDL when ``sdl.enabled``: config, rollout tools, entry point.

The engine is TRL's ``GRPOTrainer`` (``grpo_trainer.py`` subclasses it): it owns batching,
advantages, the clipped objective, the optimizer and schedule, checkpoints, DDP / DeepSpeed and
vLLM. What is ours goes in through its extension points:

- rollouts: a ``rollout_func`` runs our ``Agent`` (our tools behind a per-group cache, our turn
  protocol) G times per prompt and hands TRL the whole conversation as one completion with an
  ``env_mask`` that marks the policy's own tokens, so tool responses and template scaffolding
  between turns are context, never trained;
- rewards: our reward functions score the trajectory (program, render, judges) inside the
  rollout, and TRL's reward function reads that score;
- SDL: ``compute_loss`` adds λ·(masked reverse KL to the teacher that sees the Decision Guide);
- the run folder: metrics.jsonl (one row per step), status.json, rollouts.jsonl, the guide
  buffer and ``checkpoints/latest`` are kept by a callback on top of TRL's checkpoints.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from genevolve.agent import AgentConfig
from genevolve.embeddings import DEFAULT_MODEL
from genevolve.program import IMG_ID_RE
from genevolve.tools.base import Tool, ToolContext, ToolResult
from genevolve.training.config import TrainingConfig, option
from genevolve.training.rewards import RewardConfig
from genevolve.training.sdl import GATE


@dataclass
class SDLConfig:
    enabled: bool = option(False, "Add the SDL term and keep a Decision Guide buffer.")
    lam: float = option(0.1, "λ: weight of the SDL term in the total loss.")
    delta_min: float = option(0.2, "Minimum best-worst reward gap in a group to distil a guide.")
    top_fraction: float = option(0.1, "Share of decision tokens kept per sequence (largest teacher-student gap).")
    gate: float = option(GATE, "Cosine a retrieved guide needs to reach the teacher.")
    capacity: int = option(500, "Guides kept in the rolling buffer (oldest out).")
    embedder: str = option(DEFAULT_MODEL, "Sentence embedder for guide retrieval.")
    distiller: str | None = option(None, "openai:<model>@<base_url> writes guides; None: contrastive, offline.")
    store_path: str | None = option(None, "SQLite store for guides; None: the settings' store (the studio shows it).")
    rho_max: float = option(2.0, "Clip of the importance weight π_θ/π_old in the SDL term.")


@dataclass
class GRPOConfig(TrainingConfig):
    # Flat keys of older configs, read into the ``agent`` section.
    LEGACY_KEYS = {"max_rounds": ("agent", "max_rounds"), "max_tool_calls": ("agent", "max_tool_calls"),
                   "max_references": ("agent", "max_references"),
                   "system_prompt_path": ("agent", "system_prompt_path"), "protocol": ("agent", "protocol")}

    run_dir: str = option("runs/grpo", "Run folder: config.yaml, status.json, metrics.jsonl, checkpoints/.")
    lr: float = option(1e-6, "Peak learning rate (AdamW, betas 0.9/0.99).")
    save_every: int = option(10, "Checkpoint every this many steps (and always at the last step or a stop).")
    prompts: str = option("", "JSONL of bench rows ({\"question\" | \"prompt\", ...}); keywords for the rule reward.")
    prompts_per_step: int = option(1, "Prompts per step per process; each becomes a whole group on one process.")
    group_size: int = option(6, "Rollouts per prompt (G).")
    clip_eps: float = option(0.2, "PPO clip ε of the ratio.")
    beta: float = option(0.0, "KL to the reference policy (the adapter switched off for LoRA).")
    ppo_epochs: int = option(1, "Updates per batch of rollouts (TRL's num_iterations; >1 makes the ratio bite).")
    scale_rewards: bool = option(True, "Divide advantages by the group's reward std.")
    temperature: float = option(1.0, "Sampling temperature of the rollouts.")
    top_p: float = option(1.0, "Nucleus sampling of the rollouts.")
    max_new_tokens: int = option(512, "Tokens per policy turn.")
    agent: AgentConfig = option(factory=AgentConfig,
                                help="The agent loop: max_rounds, max_tool_calls, max_references, system_prompt_path.")
    settings: str | None = option(None, "A Settings file (corpus, library, tool cache); None: defaults.")
    tools: str = option("offline", "offline: real tools on local backends | online: web backends | none.")
    reward: RewardConfig = option(factory=RewardConfig, help="The reward (typed; see RewardConfig).")
    sdl: SDLConfig = option(factory=SDLConfig, help="Self-distillation from Decision Guides.")
    save_images: bool = option(False, "Keep each rollout's rendered image under run_dir/images.")
    use_vllm: bool = option(False, "Generate rollouts with vLLM (GPU hosts; see the README).")
    vllm_mode: str = option("colocate", "colocate: vLLM in the training processes | server: trl vllm-serve.")
    trl: dict = option(factory=dict, help="Further trl.GRPOConfig fields, passed through (e.g. loss_type).")


# ---------------------------------------------------------------- tools shared by a group

class GroupToolCache(Tool):
    """Memoises a tool's results for the G rollouts of one prompt.

    A hit re-registers the result's images in the calling trajectory's registry and renames
    the IMG ids in the text, so every trajectory keeps its own consistent ids. The rollouts of a
    group run in threads (lock step): one call at a time, so an identical call runs once.
    """

    def __init__(self, tool: Tool):
        self.tool = tool
        self.name = tool.name
        self.description = getattr(tool, "description", "")
        self.backend_name = getattr(tool, "backend_name", tool.name)
        self.memo: dict[str, ToolResult] = {}
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def clear(self) -> None:
        self.memo.clear()

    def __call__(self, args: dict, ctx: ToolContext) -> ToolResult:
        with self._lock:
            return self._call(args, ctx)

    def _call(self, args: dict, ctx: ToolContext) -> ToolResult:
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



def train_grpo(cfg: GRPOConfig, *, reward_fn=None, tools=None, quiet: bool = False, probe=None) -> dict:
    """Run (or resume) GRPO; any error marks ``status.json`` failed (with the message) and propagates.

    ``probe(model)``, when given, is called on every process with its trained model at the end."""
    from genevolve.training.metrics import RunFiles

    try:
        from genevolve.training.grpo_trainer import run_grpo

        return run_grpo(cfg, reward_fn=reward_fn, tools=tools, quiet=quiet, probe=probe)
    except Exception as exc:
        from genevolve.training.distributed import is_main_process

        if is_main_process():
            RunFiles(cfg.run_dir).status("failed", message=f"{type(exc).__name__}: {exc}"[:2000])
        raise
