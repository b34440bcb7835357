"""GRPO with the hybrid reward, plus SDL when ``sdl.enabled``: config, rollout tools, entry point.

The engine is TRL's ``GRPOTrainer`` (``grpo_trainer.py`` subclasses it): it owns batching,
advantages, the clipped objective, the optimizer and schedule, checkpoints, DDP / DeepSpeed and
vLLM. What is ours goes in through its extension points:

- the config: ``GRPOConfig`` is a ``trl.GRPOConfig`` (TRL's fields by TRL's names) plus ours;
- rollouts: a ``rollout_func`` rolls each prompt's G rollouts of our ``Agent`` out in lock step
  (``group_rollout``: one batched decode per turn, our tools behind a per-group cache) and hands
  TRL each rollout's token history as one completion of the ids that were sampled, with their
  sampling log-probs and an ``env_mask`` that marks them, so tool responses and template
  scaffolding between turns are context, never trained;
- rewards: our reward functions score the trajectory (program, render, judges) inside the
  rollout, and TRL's reward function reads that score;
- SDL: ``compute_loss`` adds λ·(masked reverse KL to the teacher that sees the Decision Guide);
- the run folder: metrics.jsonl (one row per step), status.json, rollouts.jsonl, the guide
  buffer and ``checkpoints/latest`` are kept by a callback on top of TRL's checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import trl

from genevolve.agent import AgentConfig
from genevolve.embeddings import DEFAULT_MODEL
from genevolve.program import IMG_ID_RE
from genevolve.tools.base import Tool, ToolContext, ToolResult
from genevolve.training.config import ModelConfig, option
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
class GRPOConfig(trl.GRPOConfig):
    """``trl.GRPOConfig`` (every TRL field, used as TRL documents it: ``learning_rate``, ``beta``,
    ``epsilon``, ``num_iterations``, ``temperature``, ``top_p``, ``loss_type``, ``save_steps``…)
    plus what is ours: the prompts, the group, the agent, its tools, the reward, SDL, the run folder.

    Set from ours, not by hand: ``num_generations`` = ``group_size``, a step's batch
    (``per_device_train_batch_size``) = ``prompts_per_step`` × ``group_size``, one generation per
    step, ``max_completion_length`` = ``model.max_length``, and ``output_dir`` = run_dir/checkpoints.
    """

    # ours
    model: ModelConfig = option(factory=ModelConfig, help="The policy to train (name, dtype, LoRA, max_length).")
    run_dir: str = option("runs/grpo", "Run folder: config.yaml, status.json, metrics.jsonl, rollouts.jsonl, "
                          "checkpoints/.")
    prompts: str = option("", "JSONL of bench rows ({\"question\" | \"prompt\", ...}); keywords for the rule reward.")
    prompt_pool: int | None = option(None, "Train on this many prompts of the file (a pick seeded by `seed`), so a "
                                     "run of max_steps revisits each: SDL's gate then finds the guides of its own "
                                     "earlier steps. None: all.")
    prompts_per_step: int = option(1, "Prompts per step per process; each becomes a whole group on one process.")
    group_size: int = option(6, "Rollouts per prompt (G), rolled out in lock step.")
    max_new_tokens: int = option(512, "Tokens per policy turn.")
    agent: AgentConfig = option(factory=AgentConfig,
                                help="The agent loop: max_rounds, max_tool_calls, max_references, system_prompt_path.")
    settings: str | None = option(None, "A Settings file (corpus, library, tool cache); None: defaults.")
    tools: str = option("offline", "offline: real tools on local backends | online: web backends | none.")
    reward: RewardConfig = option(factory=RewardConfig, help="The reward (typed; see RewardConfig).")
    sdl: SDLConfig = option(factory=SDLConfig, help="Self-distillation from Decision Guides.")
    save_images: bool = option(False, "Keep each rollout's rendered image under run_dir/images.")
    resume: bool = option(True, "Continue from checkpoints/latest when the run folder has one.")
    fork_from: str | None = option(None, "Another GRPO run's checkpoint-N folder: a run with no checkpoint of its "
                                   "own starts there, sharing steps 1-N with that run. A plain run (SDL off) is "
                                   "refused if the source's SDL trained by step N; an SDL run takes the source's "
                                   "guides up to step N. None: start from init_adapter.")
    stop_after: int | None = option(None, "Stop (checkpointed, resumable) after this many steps in this process.")

    # TRL's fields, with our defaults
    output_dir: str | None = option(None, "Set from run_dir (run_dir/checkpoints).")
    seed: int = option(0, "Seeds Python, NumPy and torch (and the prompts' order in each epoch).")
    max_steps: int = option(100, "Optimizer steps to run in total (a resumed run stops here too).")
    learning_rate: float = option(1e-6, "Peak learning rate (AdamW, betas 0.9/0.99).")
    adam_beta2: float = option(0.99, "AdamW beta2.")
    lr_scheduler_type: str = option("cosine_with_min_lr", "Warm-up, then cosine decay to 10% of the peak rate.")
    lr_scheduler_kwargs: dict | str | None = option(factory=lambda: {"min_lr_rate": 0.1}, help="The schedule's options.")
    save_steps: float = option(10, "Checkpoint every this many steps (and always at the last step or a stop).")
    save_total_limit: int | None = option(3, "Step checkpoints kept (latest is never pruned).")
    logging_steps: float = option(1, "One metrics row per step.")
    beta: float = option(0.0, "KL to the reference policy: the init_adapter as it was at step 0 (TRL keeps a "
                         "frozen copy, 'ref'), else the base with the fresh LoRA switched off.")
    loss_type: str = option("grpo", "TRL's loss aggregation.")
    shuffle_dataset: bool = option(False, "Off: the prompts are shuffled per epoch by seed when the dataset is built, "
                                   "so a resumed run draws the same order.")
    report_to: str | list[str] | None = option("none", "Loggers besides the run folder.")
    remove_unused_columns: bool | None = option(False, "Keep the dataset's case_index column.")
    disable_tqdm: bool | None = option(True, "The run folder's bar replaces TRL's.")
    log_level: str = option("warning", "transformers' log level.")
    ddp_find_unused_parameters: bool | None = option(False, "DDP: every parameter takes part in the loss.")

    def __post_init__(self):
        import torch

        from genevolve.training.modeling import pick_dtype

        self.num_generations = self.group_size
        self.per_device_train_batch_size = self.prompts_per_step * self.group_size
        self.gradient_accumulation_steps = 1
        self.steps_per_generation = 1
        self.generation_batch_size = None
        self.max_completion_length = self.model.max_length
        self.output_dir = self.output_dir or str(Path(self.run_dir) / "checkpoints")
        on_gpu = torch.cuda.is_available()
        self.use_cpu = self.use_cpu or not on_gpu
        self.bf16 = bool(self.bf16 or (on_gpu and pick_dtype(self.model.dtype) == torch.bfloat16))
        with warnings.catch_warnings():  # TRL reads transformers' own deprecated gradient_checkpointing name
            warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning)
            super().__post_init__()

    def to_dict(self) -> dict:
        """TRL's dict of the fields, with our nested sections as plain dicts (config.yaml)."""
        out = super().to_dict()
        for name in ("model", "agent", "reward", "sdl"):
            out[name] = dataclasses.asdict(getattr(self, name))
        return out


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
