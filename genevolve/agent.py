"""The agent loop: request -> [think -> tool_call -> tool_response]* -> answer(program).

``Agent.stream`` yields typed events as they happen; ``Agent.run`` returns the Trajectory.
The runtime, not the model, enforces the round and tool-call caps, the single corrective
message after a format error and the forced answer in the last round. Nothing the policy or a
tool does escapes as an exception: the trajectory ends with a termination reason instead.

Under the ``official`` protocol profile the loop speaks as the official runtime does
(``genevolve.official.turns``): answer-first turn reading, a wrapped nudge after every format
error until the round cap, silent resolution of an answer's references, text-only tool replies
and the official termination names.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from genevolve.official import turns as official
from genevolve.profiles import get_profile
from genevolve.program import (
    Program,
    ProgramError,
    Reference,
    derive_constraints,
    repair_program,
    request_problem,
    validate_program,
)
from genevolve.protocol import correction_message
from genevolve.tools.base import Tool, ToolContext, ToolResult
from genevolve.trajectory import (
    AnswerEvent,
    Done,
    Event,
    FormatErrorEvent,
    ImageRegistry,
    RoundStart,
    Step,
    TextDelta,
    ToolCallEvent,
    ToolResultEvent,
    Trajectory,
    WarningEvent,
)


@dataclass
class AgentConfig:
    max_rounds: int = 11
    max_tool_calls: int = 10
    max_references: int = 2
    system_prompt_path: str | None = None
    offline: bool = True
    protocol: str | None = None  # a profile spec (genevolve.profiles); None: the policy's preference, else ours


class Agent:
    def __init__(self, policy, tools: dict[str, Tool] | Sequence[Tool], config: AgentConfig | None = None,
                 *, store=None, work_dir: str | Path | None = None, backends: dict[str, str] | None = None):
        self.policy = policy
        self.tools = tools if isinstance(tools, dict) else {t.name: t for t in tools}
        self.config = config or AgentConfig()
        # A policy trained on one conversation shape (the nano adapter: the compact one) says so.
        self.profile = get_profile(self.config.protocol or getattr(policy, "preferred_protocol", None))
        self.system_prompt = self.profile.system_prompt(self.config.system_prompt_path)
        # Each profile has its sampling defaults (official: 0.6 / top_p 0.9 / 4096, no stop strings);
        # a policy keeps whatever its spec set explicitly.
        use_sampling = getattr(policy, "use_profile_sampling", None)
        if callable(use_sampling):
            use_sampling(self.profile.sampling)
        # A replayed recording announces its last round where the recording did.
        recorded_cap = getattr(policy, "recorded_max_rounds", None)
        if recorded_cap and recorded_cap != self.config.max_rounds:
            import dataclasses

            self.config = dataclasses.replace(self.config, max_rounds=recorded_cap)
        self.store = store
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.gettempdir()) / "genevolve-runs"
        self.backends = dict(backends or {})
        self.backends.setdefault("policy", getattr(policy, "name", type(policy).__name__))

    # ------------------------------------------------------------------ public API

    def run(self, request: str, images: Sequence[str | Path] = (), **kw) -> Trajectory:
        traj = None
        for event in self.stream(request, images, **kw):
            if isinstance(event, Done):
                traj = event.trajectory
        return traj

    def stream(self, request: str, images: Sequence[str | Path] = (), *,
               cancel: threading.Event | None = None, session: str | None = None) -> Iterator[Event]:
        traj = Trajectory(request=request)
        traj.backends = dict(self.backends)
        traj.meta["offline"] = self.config.offline
        traj.meta["protocol"] = self.profile.name
        if self.profile.official:
            traj.meta["protocol_assets"] = str(self.profile.assets.package_dir)
        if session:
            traj.meta["session"] = session
        started = time.perf_counter()
        try:
            yield from self._loop(traj, images, cancel)
        except GeneratorExit:
            # The consumer walked away (browser closed, stop pressed): keep what we have.
            traj.termination, traj.reason = "cancelled", "the caller stopped reading events"
            self._finish(traj, started)
            raise
        except Exception as exc:  # noqa: BLE001 - never an exception into the caller
            traj.termination, traj.reason = "policy_error", f"internal error: {type(exc).__name__}: {exc}"
        self._finish(traj, started)
        yield Done(trajectory=traj)

    # ------------------------------------------------------------------ the loop

    def _loop(self, traj: Trajectory, user_images, cancel) -> Iterator[Event]:
        cfg = self.config
        prof = self.profile
        registry = ImageRegistry()
        work = self.work_dir / traj.id
        ctx = ToolContext(registry=registry, work_dir=work, offline=cfg.offline, request=traj.request,
                          profile=self.profile)
        for path in user_images:
            p = Path(path)
            if not p.is_file():
                msg = f"user image not found: {p}"
                traj.warnings.append(msg)
                yield WarningEvent(message=msg)
                continue
            ref = registry.register(p, source="user", title=p.name)
            if ref.img_id not in traj.user_image_ids:
                traj.user_image_ids.append(ref.img_id)
        ctx.user_images = [registry.get(i) for i in traj.user_image_ids]
        traj.images = registry.list()  # a run that ends before any tool call still lists the user's images
        problem = request_problem(traj.request, len(traj.user_image_ids))
        if problem:  # nothing to plan: say so rather than draw a generic image
            traj.termination, traj.reason = "invalid_request", problem
            yield WarningEvent(message=problem)
            return
        user_text = traj.request
        if traj.user_image_ids:
            listing = ", ".join(f"{i} ({registry.get(i).title})" for i in traj.user_image_ids)
            user_text += f"\n\nThe user provided reference images: {listing}."
        first = {"role": "user", "content": user_text}
        if not self.profile.text_only:  # the official runtime sends text only, the user's images by id
            first["images"] = list(traj.user_image_ids)
        traj.messages = [{"role": "system", "content": self.system_prompt}, first]
        # Recorded as "running" before the first round, so a killed process still leaves the
        # request (and its user images) in the store; the final save replaces this row.
        self._save(traj)
        tool_calls = 0
        corrected = False  # a format error gets one corrective message; a second in a row ends the run
        final_announced = False
        for rnd in range(1, cfg.max_rounds + 1):
            if cancel is not None and cancel.is_set():
                traj.termination, traj.reason = "cancelled", "stopped by the user"
                return
            # The official runtime announces only the round cap; its prompt states the tool budget.
            final = rnd == cfg.max_rounds or (not prof.official and tool_calls >= cfg.max_tool_calls)
            if final and not final_announced:
                traj.messages.append({"role": "user", "content": prof.final_message()})
                final_announced = True
            yield RoundStart(round=rnd, final=final)
            round_t0 = time.perf_counter()
            step = Step(round=rnd)
            traj.steps.append(step)
            chunks: list[str] = []
            try:
                for delta in self.policy.stream(traj.messages, registry.list()):
                    if cancel is not None and cancel.is_set():
                        break
                    if delta:
                        chunks.append(delta)
                        yield TextDelta(round=rnd, text=delta)
            except Exception as exc:  # noqa: BLE001
                step.kind, step.error = "policy_error", f"{type(exc).__name__}: {exc}"
                step.assistant_text = "".join(chunks)
                step.policy_s = step.round_s = time.perf_counter() - round_t0
                traj.termination = official.ERROR if prof.official else "policy_error"
                traj.reason = step.error
                return
            for w in _take_warnings(self.policy):
                traj.warnings.append(w)
                yield WarningEvent(message=w, round=rnd)
            if cancel is not None and cancel.is_set():
                traj.termination, traj.reason = "cancelled", "stopped by the user"
                step.assistant_text = "".join(chunks)
                return
            text = prof.finish_turn("".join(chunks))
            step.policy_s = time.perf_counter() - round_t0
            step.assistant_text = text
            traj.messages.append({"role": "assistant", "content": text})
            turn = prof.parse_turn(text)
            step.think = turn.think

            if prof.official and turn.kind != "tool_call":
                event = self._official_outcome(traj, step, turn, text, rnd, final, registry, round_t0)
                yield event
                if isinstance(event, FormatErrorEvent) and traj.termination == "running":
                    continue  # nudged; the model tries again next round
                return

            if turn.kind == "tool_call" and final and not prof.official:
                turn.kind, turn.error = "error", "tool calls are no longer allowed; an answer is due"
            if turn.kind == "answer":
                try:
                    program = Program.from_answer(turn.answer)
                except ProgramError as exc:
                    turn.kind, turn.error = "error", str(exc)
            if turn.kind == "error":
                step.kind, step.error = "format_error", turn.error
                step.round_s = time.perf_counter() - round_t0
                yield FormatErrorEvent(round=rnd, error=turn.error, text=text)
                if corrected or rnd == cfg.max_rounds:
                    traj.termination = "format_error" if rnd < cfg.max_rounds else "max_rounds"
                    traj.reason = f"round {rnd}: {turn.error}"
                    return
                corrected = True
                traj.messages.append({"role": "user", "content": correction_message(turn.error)})
                continue

            if turn.kind == "tool_call":
                call = turn.tool_call
                tool_calls += 1
                step.kind, step.tool_name, step.tool_arguments = "tool_call", call.name, call.arguments
                yield ToolCallEvent(round=rnd, name=call.name, arguments=call.arguments)
                tool_t0 = time.perf_counter()
                result = self._recorded_reply(call.name, registry) or self._call_tool(call.name, call.arguments, ctx)
                step.tool_s = time.perf_counter() - tool_t0
                step.tool_text, step.tool_backend, step.error = result.text, result.backend, result.error
                step.tool_images = [i.img_id for i in result.images]
                reply = {"role": "user", "content": prof.tool_response(result.text)}
                if not prof.text_only:
                    reply["images"] = list(step.tool_images)
                traj.messages.append(reply)
                step.round_s = time.perf_counter() - round_t0
                traj.images = registry.list()
                yield ToolResultEvent(round=rnd, name=call.name, text=result.text, images=list(result.images),
                                      elapsed_s=step.tool_s, error=result.error, backend=result.backend)
                corrected = False
                continue

            # An answer.
            known = registry.ids()
            issues = validate_program(program, known, cfg.max_references)
            if issues and not corrected and rnd < cfg.max_rounds:
                corrected = True
                error = "; ".join(i.message for i in issues)
                step.kind, step.error = "format_error", error
                step.round_s = time.perf_counter() - round_t0
                yield FormatErrorEvent(round=rnd, error=error, text=text)
                traj.messages.append({"role": "user", "content": correction_message(error)})
                continue
            repairs: list[str] = []
            if issues:
                program, repairs = repair_program(program, known, cfg.max_references)
                traj.warnings.extend(f"program repaired: {r}" for r in repairs)
            for ref in program.reference_images:
                img = registry.get(ref.img_id)
                ref.path = img.path if img else None
            program.constraints = derive_constraints(traj.request, program)
            step.kind = "answer"
            step.round_s = time.perf_counter() - round_t0
            traj.program = program
            traj.images = registry.list()
            traj.termination = "forced_answer" if final_announced else "answer"
            yield AnswerEvent(round=rnd, program=program, forced=final_announced, repairs=repairs)
            return
        traj.termination = official.MAX_ROUNDS if prof.official else "max_rounds"
        traj.reason = f"no answer within {cfg.max_rounds} rounds"

    def _official_outcome(self, traj: Trajectory, step: Step, turn, text: str, rnd: int, final: bool,
                          registry: ImageRegistry, round_t0: float) -> Event:
        """A format error or an answer, handled as the official runtime does."""
        if turn.kind == "error":
            step.kind, step.error = "format_error", turn.error
            step.round_s = time.perf_counter() - round_t0
            if final:  # the last round had no answer: the run ends without a program
                traj.termination, traj.reason = official.NO_ANSWER, "no_answer_in_final_round"
            else:
                traj.messages.append({"role": "user", "content": official.format_nudge()})
            return FormatErrorEvent(round=rnd, error=turn.error, text=text)
        gen_prompt, refs, dropped = official.resolve_answer(turn.answer, registry.ids(), self.config.max_references)
        if dropped:
            traj.warnings.append("answer cited image ids never shown, dropped as the official runtime does: "
                                 + ", ".join(repr(i) for i in dropped))
        step.kind = "answer"
        step.round_s = time.perf_counter() - round_t0
        traj.termination = official.ANSWER
        traj.images = registry.list()
        if not gen_prompt:
            traj.reason = "the answer has no gen_prompt"
            return WarningEvent(message=traj.reason, round=rnd)
        program = Program(gen_prompt=gen_prompt, reference_images=[Reference(**r) for r in refs])
        for ref in program.reference_images:
            img = registry.get(ref.img_id)
            ref.path = img.path if img else None
        program.constraints = derive_constraints(traj.request, program)
        traj.program = program
        return AnswerEvent(round=rnd, program=program, forced=final, repairs=[])

    def _recorded_reply(self, name: str, registry: ImageRegistry) -> ToolResult | None:
        """A replayed official run answers its tool calls with the recorded replies (nothing is rerun)."""
        recorded = getattr(self.policy, "recorded_tool_reply", None)
        text = recorded() if callable(recorded) else None
        if text is None:
            return None
        from genevolve.official.records import recorded_images

        images = []
        for ref in recorded_images(text) if name == "image_search" else []:
            if registry.get(ref.img_id) is None:
                registry._insert(ref)  # the recorded id and file, as the recorded run listed them
            images.append(registry.get(ref.img_id))
        return ToolResult(text=text, images=images, backend="recorded",
                          error=text if text.startswith("[tool error]") else None)

    def _call_tool(self, name: str, args: dict, ctx: ToolContext) -> ToolResult:
        tool = self.tools.get(name)
        is_official = self.profile.official
        if tool is None:
            known = ", ".join(sorted(self.tools))
            return ToolResult(text=official.unknown_tool(name) if is_official else
                              f"Unknown tool '{name}'. Available tools: {known}.", error=f"unknown tool {name}")
        try:
            result = tool(args, ctx)
        except Exception as exc:  # noqa: BLE001 - a broken tool is reported to the model
            return ToolResult(text=official.tool_error(name, exc) if is_official else
                              f"The {name} tool failed: {type(exc).__name__}: {exc}",
                              error=f"{type(exc).__name__}: {exc}")
        for ref in result.images:
            if ctx.registry.get(ref.img_id) is None:  # tools register; guard against a stray ref
                ctx.registry._insert(ref)
        return result

    def _finish(self, traj: Trajectory, started: float) -> None:
        traj.elapsed_s = time.perf_counter() - started
        traj.events = _compact_events(traj)
        self._save(traj)

    def _save(self, traj: Trajectory) -> None:
        if self.store is None:
            return
        try:
            self.store.save_trajectory(traj)
        except Exception as exc:  # noqa: BLE001 - a full disk must not hide the result
            traj.warnings.append(f"could not save the trajectory: {exc}")


def _take_warnings(policy) -> list[str]:
    take = getattr(policy, "take_warnings", None)
    return list(take()) if callable(take) else []


def _compact_events(traj: Trajectory) -> list[dict]:
    """A replayable event log derived from the steps (text deltas are not kept twice)."""
    out = []
    for s in traj.steps:
        out.append({"type": "round", "round": s.round, "kind": s.kind, "policy_s": round(s.policy_s, 4),
                    "tool_s": round(s.tool_s, 4), "round_s": round(s.round_s, 4)})
    return out


def build_agent(settings=None, *, store=None, policy=None, tools=None, offline: bool | None = None) -> Agent:
    """An Agent wired from Settings: policy spec, tool backends, limits, store."""
    from genevolve.config import Settings
    from genevolve.policies import make_policy
    from genevolve.tools import build_tools

    settings = settings or Settings.load()
    offline = settings.resolved_offline() if offline is None else offline
    policy = policy or make_policy(settings.policy)
    tools = tools or build_tools(settings, offline=offline)
    config = AgentConfig(max_rounds=settings.max_rounds, max_tool_calls=settings.max_tool_calls,
                         max_references=settings.max_references, system_prompt_path=settings.system_prompt_path,
                         offline=offline, protocol=settings.protocol)
    backends = {"policy": settings.policy, "renderer": settings.renderer}
    backends.update({f"tool:{name}": getattr(t, "backend_name", name) for name, t in tools.items()})
    return Agent(policy, tools, config, store=store, work_dir=settings.runs_dir, backends=backends)
