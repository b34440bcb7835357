"""Many trajectories through one Agent at once: ``run_many`` for a list of requests,
``run_groups`` for GRPO-style groups (several rollouts of each prompt).

Groups run leader-first: the first rollout of every prompt is queued before any second one.
With a tool cache in front of the tools, the later rollouts of a prompt then find the answers to
the questions its first rollout asked already stored (or in flight, and share that call), instead
of all asking at the same moment and all waiting for the same backend latency. Each rollout still
samples on its own; only identical tool calls are shared. Results come back grouped by prompt.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from genevolve.trajectory import Trajectory


def run_many(agent, requests: Sequence[str], parallel: int = 1,
             images: Sequence[str | Path] = ()) -> list[Trajectory]:
    """One trajectory per request, ``parallel`` at a time, in the order of ``requests``."""
    if parallel <= 1:
        return [agent.run(r, images) for r in requests]
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="rollout") as pool:
        return list(pool.map(lambda r: agent.run(r, images), requests))


def leader_first(n_prompts: int, group_size: int) -> list[int]:
    """Prompt indices in the order their rollouts start: every prompt once, then again, ..."""
    return [p for _ in range(group_size) for p in range(n_prompts)]


def run_groups(agent, prompts: Sequence[str], group_size: int, parallel: int = 1,
               images: Sequence[str | Path] = ()) -> list[list[Trajectory]]:
    """``group_size`` rollouts of each prompt, ``parallel`` at a time, leader-first; grouped by prompt."""
    if group_size < 1:
        raise ValueError(f"group_size must be at least 1, got {group_size}")
    order = leader_first(len(prompts), group_size)
    trajectories = run_many(agent, [prompts[p] for p in order], parallel, images)
    groups: list[list[Trajectory]] = [[] for _ in prompts]
    for p, traj in zip(order, trajectories):
        groups[p].append(traj)
    return groups
