"""Training: SFT cold start, GRPO with the hybrid reward, and SDL from Decision Guides.

Modules, one concern each:
  config.py      TrainingConfig (SFT's fields, help text per field), ModelConfig, YAML loading
  distributed.py the process group (one process or several), is_main_process
  rng.py         seeding
  stopping.py    GracefulStop: SIGTERM/SIGINT finish the step, checkpoint, exit 0
  data.py        chat messages -> token ids with assistant / decision masks; SFT and prompt loading
  modeling.py    loading a policy to train (LoRA, frozen vision, checkpointing); log-probs only
                 at the positions that carry a loss
  sft.py         SFTConfig + train_sft
  sft_trainer.py GenevolveSFTTrainer: TRL's SFTTrainer on our encoded conversations, held-out loss
  grpo.py        GRPOConfig (a trl.GRPOConfig with agent, reward and sdl sections), rollout tools, train_grpo
  grpo_trainer.py  AgentGRPOTrainer: TRL's GRPOTrainer with our rollout_func, rewards, SDL term
  group_rollout.py a GRPO group's rollouts in lock step: one batched decode per turn, sampled-id histories
  trl_run.py     the run folder on top of both TRL trainers: metrics rows, status, latest/best,
                 resume, SIGTERM / stop_after, the shared TRL arguments
  rewards.py     RewardConfig, HybridReward (render + judge + sufficiency), KeywordReward (a rule)
  sdl.py         Decision Guides, distillers, GuideBuffer, retrieve_guide, the SDL loss
  allocator.py   `genevolve train` restarts once with glibc malloc tunables (freed memory is reused)
  metrics.py     run-directory files; commands.py the CLI
  tiny.py        a tiny word-level Gemma 3 for CI (``model: tiny:gemma3``)

Run directory (``run_dir`` in the config; the studio's Training tab reads it while a job runs):

  run_dir/
    config.yaml        the resolved config, with ``trainer: sft|grpo``
    status.json        {"state": starting|running|stopped|done|failed, "step", "total_steps", "pid",
                        "updated_at", "world_size" (processes), ...}; replaced atomically
    metrics.jsonl      one JSON object per optimizer step. Both trainers: step, loss, lr, grad_norm,
                       tokens, tokens_per_s, step_s, time. SFT adds entropy, mean_token_accuracy (TRL's),
                       and eval_loss (and best: true) on evaluation steps. GRPO adds pg_loss, kl_ref,
                       reward_mean, reward_std, <component>_mean
                       (r_img_mean, r_text_mean or keyword_mean), adv_mean, adv_std, adv_abs_mean, clip_frac,
                       trained_samples, tool_calls, tool_counts, skill_counts, terminations, tool_cache_hits,
                       timings {generation_s, tools_s, render_s, judge_s, distill_s, retrieve_s,
                       old_logp_s, forward_backward_s, teacher_sdl_s}; with SDL: sdl_loss, sdl_kl,
                       sdl_kept_tokens, guide_hit_rate, guides_added, buffer_size
    rollouts.jsonl     GRPO only: per prompt and step (and rank), each rollout's reward, advantage,
                       tools, program
    checkpoints/
      checkpoint-40/   both trainers: TRL's checkpoint (the adapter or weights at the top level, usable
                       as ``hf:<dir>`` / ``adapter=<dir>``; optimizer.pt, scheduler.pt, rng_state*.pth
                       per process, trainer_state.json)
      latest           name of the newest complete checkpoint (resume starts here, on every rank)
      best             SFT: name of the checkpoint with the lowest held-out loss

Trainers run in the foreground (``genevolve train sft|grpo --config FILE``), as a subprocess, or
under ``torchrun`` / ``accelerate launch`` with several processes (rank 0 alone writes this
folder). SIGTERM makes them checkpoint and exit 0 with status "stopped"; the same command
resumes; a run killed before its first checkpoint starts clean (no step is logged twice).
"""

__all__ = ["retrieve_guide"]


def retrieve_guide(request, store, model=None, gate=None):
    """The top-1 Decision Guide for a request: ``(guide | None, cosine, passes_gate)``.

    ``model`` defaults to the shared all-MiniLM-L6-v2 and ``gate`` to ``sdl.GATE`` (0.84).
    """
    from genevolve.training import sdl

    return sdl.retrieve_guide(request, store, model=model, gate=sdl.GATE if gate is None else gate)
