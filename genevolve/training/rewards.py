"""Rewards for GRPO: ``reward(case, trajectory) -> Reward``.

``HybridReward`` is the paper's: render the program, R_img from the configured image judge
(kscore when an endpoint is given, the local OCR/constraint judge otherwise), R_text from the
sufficiency judge, R = w·R_img + (1−w)·R_text. A rollout that ends without a program scores 0.
``KeywordReward`` is a verifiable rule (the answer must name the requested words) for tests
and smoke runs. Anything with the same call signature plugs in.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from genevolve.trajectory import Trajectory
from genevolve.training.config import config_from_dict, option


@dataclass
class RewardConfig:
    kind: str = option("hybrid", "hybrid: R = w·R_img + (1−w)·R_text | keywords: share of the row's keywords named.")
    w: float = option(0.5, "Hybrid: weight of the image reward.")
    renderer: str = option("layout", "Hybrid: renderer spec the program is drawn with.")
    judge: str = option("local", "Hybrid: image judge spec (local, kscore:<model>@<url>, ...).")
    sufficiency: str = option("sufficiency", "Hybrid: judge spec of the text (sufficiency) reward.")
    keywords_field: str = option("keywords", "Keywords: the prompt-row field listing the words to name.")

    @classmethod
    def from_string(cls, kind: str) -> "RewardConfig":
        return cls(kind=kind)


@dataclass
class Reward:
    total: float
    components: dict[str, float] = field(default_factory=dict)  # r_img, r_text, keyword...
    info: dict[str, Any] = field(default_factory=dict)  # judge findings, image path, timings
    timings: dict[str, float] = field(default_factory=dict)  # render_s, judge_s


class RewardFn(Protocol):
    def __call__(self, case: dict, trajectory: Trajectory) -> Reward: ...


def final_text(trajectory: Trajectory) -> str:
    """What the rollout finally said: the program's prompt, else the last assistant turn."""
    if trajectory.program is not None:
        return trajectory.program.gen_prompt
    for step in reversed(trajectory.steps):
        if step.assistant_text:
            return step.assistant_text
    return ""


class KeywordReward:
    """Share of required words (``case["keywords"]``) present in the final answer text."""

    def __init__(self, field_name: str = "keywords"):
        self.field_name = field_name

    def __call__(self, case: dict, trajectory: Trajectory) -> Reward:
        words = [w.lower() for w in case.get(self.field_name) or []]
        if not words:
            raise ValueError(f"KeywordReward needs a non-empty '{self.field_name}' list in every prompt row")
        said = set(re.findall(r"[a-z0-9_]+", final_text(trajectory).lower()))
        hit = [w for w in words if w in said]
        score = len(hit) / len(words)
        return Reward(score, {"keyword": score}, {"found": hit, "missing": [w for w in words if w not in hit]})


class HybridReward:
    """R = w·R_img + (1−w)·R_text, with the renderer and judges named by spec strings."""

    def __init__(self, renderer: str = "layout", judge: str = "local", sufficiency: str = "sufficiency",
                 w: float = 0.5, seed: int = 0, image_dir: str | None = None):
        from genevolve.judges import make_judge
        from genevolve.renderers import make_renderer

        self.renderer = make_renderer(renderer)
        self.judge = make_judge(judge)
        self.sufficiency = make_judge(sufficiency)
        self.w = float(w)
        self.seed = seed
        self.image_dir = image_dir

    def __call__(self, case: dict, trajectory: Trajectory) -> Reward:
        from genevolve.renderers import render_with_report

        if trajectory.program is None:
            return Reward(0.0, {"r_img": 0.0, "r_text": 0.0},
                          {"findings": [f"no program ({trajectory.termination}: {trajectory.reason})"]})
        timings: dict[str, float] = {}
        info: dict[str, Any] = {}
        t0 = time.perf_counter()
        try:
            image, report = render_with_report(self.renderer, trajectory.program, seed=self.seed)
        except Exception as exc:  # noqa: BLE001 - an unrenderable program earns no image reward
            image, report = None, {"error": f"{type(exc).__name__}: {exc}"}
        timings["render_s"] = time.perf_counter() - t0
        if image is not None and self.image_dir:
            from pathlib import Path

            path = Path(self.image_dir) / f"{trajectory.id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
            info["image"] = str(path)
        t0 = time.perf_counter()
        img_scores = self.judge.score(case, image, trajectory.program, trajectory) if image is not None else None
        txt_scores = self.sufficiency.score(case, None, trajectory.program, trajectory)
        timings["judge_s"] = time.perf_counter() - t0
        r_img = float(img_scores.overall or 0.0) if img_scores is not None and img_scores.status == "scored" else 0.0
        # The local judge's graded mean pays research in proportion (half-done research earns
        # part); an endpoint judge gives only its four yes/no checks.
        graded = (txt_scores.details or {}).get("graded")
        r_text = (float(graded) if graded is not None
                  else float(txt_scores.sufficiency if txt_scores.sufficiency is not None else (txt_scores.overall or 0.0))) \
            if txt_scores.status == "scored" else 0.0
        findings = []
        for scores in (img_scores, txt_scores):
            if scores is None:
                continue
            if scores.error:
                findings.append(scores.error)
            if scores.rationale:
                findings.append(scores.rationale)
        info.update({"findings": findings, "render": report,
                     "sufficiency_details": txt_scores.details, "constraint_coverage": txt_scores.constraint_coverage})
        total = self.w * r_img + (1 - self.w) * r_text
        return Reward(total, {"r_img": r_img, "r_text": r_text}, info, timings)


def make_reward(cfg: RewardConfig | dict | str | None, *, image_dir: str | None = None) -> RewardFn:
    """The reward a ``RewardConfig`` describes (a dict of its fields, or a kind string, is read into one)."""
    if cfg is None or isinstance(cfg, str):
        cfg = RewardConfig(kind=cfg or "hybrid")
    elif isinstance(cfg, dict):
        cfg = config_from_dict(RewardConfig, cfg)
    if cfg.kind == "hybrid":
        return HybridReward(renderer=cfg.renderer, judge=cfg.judge, sufficiency=cfg.sufficiency, w=cfg.w,
                            image_dir=image_dir)
    if cfg.kind == "keywords":
        return KeywordReward(cfg.keywords_field)
    raise ValueError(f"unknown reward kind '{cfg.kind}': use hybrid or keywords")
