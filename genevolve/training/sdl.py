"""Visual-experience self-distillation (SDL): Decision Guides, their buffer, and the SDL loss.

1. Per prompt, the best and worst rollouts (reward gap >= ``delta_min``) are contrasted into a
   Decision Guide: ``retrieval_key {trigger, summary}`` and ``decision_guidance`` with six kinds
   of imperative bullets (``GUIDE_KINDS``). Offline, ``ContrastiveDistiller`` derives the bullets
   from real differences between the two trajectories; with an endpoint, ``LLMDistiller`` asks
   an OpenAI-compatible model and falls back to the contrastive one on any failure.
2. ``GuideBuffer`` keeps at most ``capacity`` guides (oldest out) in the store's ``guides``
   table, indexed by a sentence embedding of trigger + summary; ``retrieve`` returns the top-1
   guide by cosine and whether it passes the gate (``GATE``, 0.84).
3. The teacher is the same policy with the guide in its system prompt; the student sees the
   plain prompt. On the student's sampled tokens, ``sdl_loss`` is the importance-weighted
   reverse KL(student || teacher) over the vocabulary, only at decision tokens (inside
   ``<tool_call>`` / ``<answer>``), keeping per sequence the top 10% of those tokens by
   |log π_teacher − log π_student| of the sampled token.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from genevolve.embeddings import DEFAULT_MODEL, text_embedder
from genevolve.trajectory import Trajectory

GUIDE_KINDS = ("tool_plan", "search_queries", "skill_routing", "reference_selection", "program_writing",
               "failure_defenses")
# The cosine a retrieved guide needs to reach the teacher (the paper's 0.84); the one place it is set.
GATE = 0.84


# ---------------------------------------------------------------- guides

def guide_key_text(guide: dict) -> str:
    return f"{guide['trigger']}. {guide['summary']}"


def as_decision_guide(guide: dict) -> dict:
    """The guide in the paper's shape: ``{retrieval_key: {trigger, summary}, decision_guidance: {...}}``."""
    return {"retrieval_key": {"trigger": guide["trigger"], "summary": guide["summary"]},
            "decision_guidance": {k: list(guide.get("guidance", {}).get(k, [])) for k in GUIDE_KINDS}}


def guide_from_json(data: dict, source_prompt: str = "", reward_gap: float | None = None) -> dict:
    """A store-shaped guide from the paper's JSON shape (or ours); raises ValueError if unusable."""
    key = data.get("retrieval_key") or data
    guidance = data.get("decision_guidance") or data.get("guidance") or {}
    trigger, summary = str(key.get("trigger") or "").strip(), str(key.get("summary") or "").strip()
    if not trigger or not summary:
        raise ValueError("a guide needs retrieval_key.trigger and retrieval_key.summary")
    clean = {}
    for kind in GUIDE_KINDS:
        items = guidance.get(kind) or []
        if isinstance(items, str):
            items = [items]
        clean[kind] = [str(b).strip() for b in items if str(b).strip()][:6]
    if not any(clean.values()):
        raise ValueError("a guide needs at least one decision_guidance bullet")
    return {"id": uuid.uuid4().hex[:12], "created_at": time.time(), "trigger": trigger, "summary": summary,
            "guidance": clean, "source_prompt": source_prompt, "reward_gap": reward_gap}


def guide_prompt_block(guide: dict) -> str:
    """The text appended to the teacher's system prompt."""
    titles = {"tool_plan": "Tool plan", "search_queries": "Search queries", "skill_routing": "Skill routing",
              "reference_selection": "Reference selection", "program_writing": "Program writing",
              "failure_defenses": "Failure defenses"}
    lines = ["", "## Decision Guide (learned from earlier attempts at a similar request)",
             f"Applies to: {guide['trigger']}"]
    for kind in GUIDE_KINDS:
        bullets = guide.get("guidance", {}).get(kind) or []
        if bullets:
            lines.append(f"{titles[kind]}:")
            lines += [f"- {b}" for b in bullets]
    return "\n".join(lines)


def with_guide(messages: list[dict], guide: dict) -> list[dict]:
    """The teacher's view: the same conversation with the guide added to the system prompt."""
    out = [dict(m) for m in messages]
    block = guide_prompt_block(guide)
    if out and out[0]["role"] == "system":
        out[0]["content"] = out[0]["content"] + "\n" + block
    else:
        out.insert(0, {"role": "system", "content": block.strip()})
    return out


# ---------------------------------------------------------------- distillers

_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'-]+")
_STOP = set("a an the and or of in on at to for with by from as is are be this that it its into over under draw "
            "make create show image picture photo please some".split())


def _trigger(request: str) -> str:
    words = [w for w in _WORD_RE.findall(request) if w.lower() not in _STOP][:8]
    return ("requests for " + " ".join(words).lower()) if words else "requests like this one"


def _summary(request: str, limit: int = 200) -> str:
    s = " ".join(request.split())
    return s if len(s) <= limit else s[: limit - 1].rsplit(" ", 1)[0] + "…"


def _tools(traj: Trajectory) -> list[str]:
    return [s.tool_name for s in traj.tool_calls() if s.tool_name]


def _queries(traj: Trajectory) -> list[str]:
    out = []
    for s in traj.tool_calls():
        args = s.tool_arguments or {}
        if s.tool_name in ("search", "image_search"):
            q = args.get("queries", args.get("query"))
            for item in (q if isinstance(q, list) else [q]):
                if isinstance(item, str) and item.strip() and item.strip() not in out:
                    out.append(item.strip())
    return out


class ContrastiveDistiller:
    """Derives guide bullets from what the best rollout did and the worst did not (and vice versa)."""

    name = "contrastive"

    def __call__(self, request: str, best: Trajectory, worst: Trajectory, best_reward, worst_reward) -> dict:
        from genevolve.program import derive_constraints

        g: dict[str, list[str]] = {k: [] for k in GUIDE_KINDS}
        bt, wt = _tools(best), _tools(worst)
        if bt:
            g["tool_plan"].append("Call the tools in this order before answering: " + " -> ".join(bt) + ".")
        else:
            g["tool_plan"].append("Answer directly; extra tool calls did not help on this kind of request.")
        if len(wt) < len(bt):
            g["tool_plan"].append(f"Do not answer after only {len(wt)} tool call(s); gather evidence first.")
        elif len(wt) > len(bt) + 1:
            g["tool_plan"].append(f"Stop researching after about {max(len(bt), 1)} calls and write the program.")

        bq, wq = _queries(best), _queries(worst)
        for q in bq[:3]:
            g["search_queries"].append(f"Search for \"{q}\".")
        for q in [q for q in wq if q not in bq][:2]:
            g["search_queries"].append(f"Avoid the unproductive query \"{q}\".")
        if not g["search_queries"]:
            g["search_queries"].append("Search with the named entities and exact titles from the request.")

        bs, ws = set(best.skills_used()), set(worst.skills_used())
        for s in sorted(bs - ws) or sorted(bs):
            g["skill_routing"].append(f"Consult the {s} skill with query_knowledge.")
        for s in sorted(ws - bs):
            g["skill_routing"].append(f"Skip the {s} skill here; it did not improve the result.")
        if not g["skill_routing"]:
            g["skill_routing"].append("Pick the skill that matches the hardest constraint of the request.")

        bp, wp = best.program, worst.program
        nb = len(bp.reference_images) if bp else 0
        nw = len(wp.reference_images) if wp else 0
        if bp and nb:
            notes = "; ".join(r.note for r in bp.reference_images if r.note)[:160]
            g["reference_selection"].append(f"Attach {nb} reference image(s)" + (f" ({notes})." if notes else "."))
        if nw > nb:
            g["reference_selection"].append(f"Do not attach more than {max(nb, 1)} reference image(s).")
        elif nb == 0:
            g["reference_selection"].append("Attach no reference image unless it shows the exact subject.")
        if best.user_image_ids:
            g["reference_selection"].append("Always use the user's own image as a reference.")

        constraints = derive_constraints(request, bp) if bp else derive_constraints(request)
        from genevolve.judges.sufficiency import constraint_stated

        for c in constraints:
            if c.source != "request":
                continue
            in_best = bool(bp) and constraint_stated(c, bp.gen_prompt)
            in_worst = bool(wp) and constraint_stated(c, wp.gen_prompt)
            if in_best and not in_worst:
                g["program_writing"].append(f"State in gen_prompt: {c.describe()}.")
        if bp:
            words = len(bp.gen_prompt.split())
            g["program_writing"].append(f"Write a gen_prompt of about {words} words naming subject, setting and style.")
        else:
            g["program_writing"].append("Finish with a valid <answer> JSON holding a non-empty gen_prompt.")

        if wp is None:
            g["failure_defenses"].append(f"Never end without an answer (the weak attempt ended: {worst.termination}).")
        for s in worst.steps:
            if s.kind == "format_error" and s.error:
                g["failure_defenses"].append(f"Avoid this format error: {s.error[:120]}.")
                break
        for finding in (getattr(worst_reward, "info", {}) or {}).get("findings", [])[:2]:
            g["failure_defenses"].append(f"Guard against: {str(finding)[:160]}.")
        if not g["failure_defenses"]:
            g["failure_defenses"].append("Check every quoted text and count from the request before answering.")
        gap = float(best_reward.total - worst_reward.total)
        guide = guide_from_json({"retrieval_key": {"trigger": _trigger(request), "summary": _summary(request)},
                                 "decision_guidance": g}, source_prompt=request, reward_gap=gap)
        guide["meta"] = {"distiller": self.name, "best_id": best.id, "worst_id": worst.id}
        return guide


_DISTILL_PROMPT = """You compare two attempts of an image-planning agent at the same request and write a
Decision Guide for future similar requests. Reply with JSON only:
{"retrieval_key": {"trigger": "<short phrase naming the kind of request>", "summary": "<one-sentence summary of the request>"},
 "decision_guidance": {"tool_plan": [...], "search_queries": [...], "skill_routing": [...],
   "reference_selection": [...], "program_writing": [...], "failure_defenses": [...]}}
Each list holds 1-3 short imperative bullets grounded in the differences between the attempts."""


class LLMDistiller:
    """Writes the guide with an OpenAI-compatible chat model; falls back to the contrastive distiller."""

    name = "llm"

    def __init__(self, spec: str, **endpoint_kw):
        from genevolve.judges.chat_endpoint import endpoint_from_spec
        from genevolve.specs import parse_spec

        s = parse_spec(spec if spec.startswith("openai:") else f"openai:{spec}")
        self.endpoint = endpoint_from_spec(s, **endpoint_kw)
        self.fallback = ContrastiveDistiller()

    def __call__(self, request, best, worst, best_reward, worst_reward) -> dict:
        def describe(t: Trajectory, r) -> dict:
            return {"reward": round(float(r.total), 3), "termination": t.termination,
                    "tools": [(s.tool_name, s.tool_arguments) for s in t.tool_calls()],
                    "program": t.program.to_official() if t.program else None,
                    "judge_findings": (r.info or {}).get("findings", [])[:3]}

        user = json.dumps({"request": request, "better_attempt": describe(best, best_reward),
                           "worse_attempt": describe(worst, worst_reward)}, ensure_ascii=False)[:12000]
        try:
            from genevolve.judges.chat_endpoint import parse_json_reply

            reply = self.endpoint.complete([{"role": "system", "content": _DISTILL_PROMPT},
                                            {"role": "user", "content": user}])
            guide = guide_from_json(parse_json_reply(reply), source_prompt=request,
                                    reward_gap=float(best_reward.total - worst_reward.total))
            guide["meta"] = {"distiller": self.name, "best_id": best.id, "worst_id": worst.id}
            return guide
        except Exception as exc:  # noqa: BLE001 - a flaky endpoint must not stop training
            guide = self.fallback(request, best, worst, best_reward, worst_reward)
            guide["meta"]["llm_error"] = f"{type(exc).__name__}: {exc}"[:300]
            return guide


def make_distiller(spec: str | None):
    return LLMDistiller(spec) if spec else ContrastiveDistiller()


def pick_pair(rewards: list[float], delta_min: float) -> tuple[int, int] | None:
    """Indices of the best and worst rollout when their gap is at least ``delta_min``."""
    if len(rewards) < 2:
        return None
    best = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
    worst = min(range(len(rewards)), key=lambda i: (rewards[i], i))
    return (best, worst) if rewards[best] - rewards[worst] >= delta_min else None


# ---------------------------------------------------------------- embeddings, buffer, retrieval

class SharedEmbedder:
    """The process-wide embedder for ``model`` (the one image search ranks with, so a GRPO run with
    SDL loads all-MiniLM-L6-v2 once), loaded at first use: a buffer with no guides never loads it."""

    def __init__(self, model: str | None = None):
        self.model = model

    def resolve(self):
        return text_embedder(self.model)

    def __call__(self, texts: list[str]):
        return self.resolve()(texts)


def _as_embedder(model) -> Any:
    if model is None or isinstance(model, str):
        return SharedEmbedder(model)
    return model  # anything callable list[str] -> (n, d) unit vectors


class GuideBuffer:
    """The rolling guide buffer, persisted in the store (oldest out beyond ``capacity``)."""

    def __init__(self, store, embedder=None, capacity: int = 500, gate: float = GATE):
        self.store = store
        self.embed = _as_embedder(embedder)
        self.capacity = capacity
        self.gate = gate
        self._index: tuple[list[dict], Any] | None = None

    def add(self, guide: dict) -> str:
        vec = self.embed([guide_key_text(guide)])[0]
        gid = self.store.add_guide(guide, embedding=vec.astype("float32").tobytes(), capacity=self.capacity)
        self._index = None
        return gid

    def __len__(self) -> int:
        return len(self.store.list_guides())

    def refresh(self) -> None:
        """Re-read the store on the next retrieval (another process may have written to it)."""
        self._index = None

    def forget(self, run_id: str, after_step: int) -> int:
        """Drop the guides run ``run_id`` wrote after ``after_step`` (steps a resume will redo)."""
        removed = self.store.delete_guides(run=run_id, after_step=after_step)
        self.refresh()
        return removed

    def _load(self):
        import numpy as np

        if self._index is None:
            guides = [g for g in self.store.list_guides() if g.get("embedding")]
            mat = np.stack([np.frombuffer(g["embedding"], dtype=np.float32) for g in guides]) if guides else None
            self._index = (guides, mat)
        return self._index

    def retrieve(self, request: str, bump: bool = True) -> tuple[dict | None, float, bool]:
        """``(guide, cosine, passes_gate)``: the top-1 guide by cosine to the request."""
        guides, mat = self._load()
        if not guides:
            return None, 0.0, False
        q = self.embed([request])[0]
        if mat.shape[1] != q.shape[0]:
            raise ValueError("the stored guide embeddings come from another embedding model; "
                             "use the same `embedder` as when they were written")
        sims = mat @ q
        i = int(sims.argmax())
        cos = float(sims[i])
        passes = cos >= self.gate
        if passes and bump:
            self.store.bump_guide(guides[i]["id"])
        guide = {k: v for k, v in guides[i].items() if k != "embedding"}
        return guide, cos, passes


def retrieve_guide(request: str, store, model: Any = DEFAULT_MODEL, gate: float = GATE
                   ) -> tuple[dict | None, float, bool]:
    """For the studio: the top-1 guide for ``request`` from ``store``, its cosine, and the gate verdict."""
    return GuideBuffer(store, model, gate=gate).retrieve(request, bump=False)


# ---------------------------------------------------------------- the loss

def topk_decision_mask(student_logp, teacher_logp, decision_mask, fraction: float = 0.1):
    """Per sequence, the top ``fraction`` of decision tokens by |log π_t − log π_s| (at least one).

    All arguments are 1-D over the same tokens; returns a bool mask that is a subset of
    ``decision_mask``. Ties break towards the earlier token.
    """
    import torch

    n = int(decision_mask.sum())
    keep = torch.zeros_like(decision_mask, dtype=torch.bool)
    if n == 0:
        return keep
    k = max(1, math.ceil(fraction * n))
    gap = (teacher_logp.detach() - student_logp.detach()).abs()
    gap = torch.where(decision_mask, gap, torch.full_like(gap, -1.0))
    idx = torch.argsort(gap, descending=True, stable=True)[:k]
    keep[idx] = True
    return keep


def reverse_kl(student_logits, teacher_logits):
    """KL(π_s || π_t) per row over the vocabulary, from raw logits ``(N, V)``."""
    import torch

    ls = torch.log_softmax(student_logits.float(), dim=-1)
    lt = torch.log_softmax(teacher_logits.float(), dim=-1)
    return (ls.exp() * (ls - lt)).sum(-1)


@dataclass
class SDLTerms:
    loss: Any  # scalar tensor (with grad)
    kl: float  # mean KL at the kept tokens
    kept: int
    decision_tokens: int


def sdl_loss(model, student, teacher, *, fraction: float = 0.1, old_logp=None, rho_max: float = 2.0,
             student_hidden=None) -> SDLTerms | None:
    """The SDL term for one rollout.

    ``student``/``teacher`` are ``data.Encoded`` of the same conversation without/with the guide:
    their assistant tokens are identical and line up in order. ``old_logp`` (the rollout
    policy's log-probs of the assistant tokens) gives the importance weight
    ρ = π_θ/π_old, detached and clipped at ``rho_max``; without it ρ = 1.
    """
    import torch

    from genevolve.training.modeling import hidden_states, logits_at, target_positions
    from trl.trainer.utils import selective_log_softmax

    from genevolve.training.modeling import model_device

    device = model_device(model)
    s_ids = torch.tensor([student.input_ids], device=device)
    s_loss = torch.tensor([student.loss_mask], device=device)
    t_loss = torch.tensor([teacher.loss_mask], device=device)
    if int(s_loss.sum()) != int(t_loss.sum()):
        raise ValueError("student and teacher renderings do not share the same assistant tokens")
    decision = torch.tensor(student.decision_mask, device=device)[s_loss[0]]
    if not bool(decision.any()):
        return None
    s_pred, t_pred = target_positions(s_loss)[0], target_positions(t_loss)[0]
    targets = s_ids[0, 1:][s_pred[:-1]]
    with torch.no_grad():
        t_hidden = hidden_states(model, teacher.model_inputs())[0][t_pred]
        t_logits_all = logits_at(model, t_hidden)
        t_logp = selective_log_softmax(t_logits_all, targets)
    if student_hidden is None:
        student_hidden = hidden_states(model, student.model_inputs())[0]
    s_rows = student_hidden[s_pred]
    with torch.no_grad():
        s_logp = selective_log_softmax(logits_at(model, s_rows.detach()), targets)
    keep = topk_decision_mask(s_logp, t_logp, decision, fraction)
    kl = reverse_kl(logits_at(model, s_rows[keep]), t_logits_all[keep])
    if old_logp is not None:
        rho = torch.exp(s_logp[keep] - old_logp[keep]).clamp(max=rho_max)
    else:
        rho = torch.ones_like(kl)
    loss = (rho.detach() * kl).mean()
    return SDLTerms(loss=loss, kl=float(kl.detach().mean()), kept=int(keep.sum()), decision_tokens=int(decision.sum()))
