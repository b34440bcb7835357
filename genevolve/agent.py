"""The agent loop: request -> [think -> tool_call -> tool_response]* -> answer(program).

``Agent.stream`` yields typed events as they happen; ``Agent.run`` returns the Trajectory.
The runtime, not the model, enforces the round and tool-call caps, the single corrective
message after a format error and the forced answer in the last round. Nothing the policy or a
tool does escapes as an exception: the trajectory ends with a termination reason instead.

The loop in named steps, each a generator of events that returns how the run ends (an
``Ending``) or None to go on; ``_finish`` records the ending, the only place that does:

    _start          user images, the request check, the conversation's opening, the first save
    _round          per round: the last-round notice, then
      _policy_turn    the policy's streamed turn (a failure or a stop ends the run)
      _tool_call      run the tool, answer the turn with its reply
      _format_error   an unusable turn: one correction, or the end
      _answer         parse, validate (a correction, then repair), the gen_prompt check and a
                      picture found for the request left unbound (one correction, then a
                      warning; a kept program loses its reasoning and gets back the
                      request's quotes, and its sentence when a subject, count or
                      position was lost), constraints: the program
    _out_of_rounds  no answer by the round cap

The conversation is not kept by hand: each step records what the policy was shown around its
turn (notice, reply), and ``Trajectory.messages`` derives the chat messages from the steps.

Under the ``official`` protocol profile the loop speaks as the official runtime does
(``genevolve.official.turns``): answer-first turn reading, a wrapped nudge after every format
error until the round cap (``_official_answer``), silent resolution of an answer's references,
text-only tool replies and the official termination names.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator, Iterator, Sequence

from genevolve.official import turns as official
from genevolve.profiles import get_profile
from genevolve.program import (
    ORDINAL_INDEX,
    ORDINAL_REF_RE,
    Program,
    ProgramError,
    Reference,
    derive_constraints,
    id_number,
    quoted_strings,
    repair_program,
    repeated_sentences,
    request_problem,
    scrub_injected,
    scrub_program,
    validate_program,
    without_repeats,
)
from genevolve.policies.base import adopt
from genevolve.protocol import (
    LAST_ROUND_RULE,
    PROMPT_CHECK,
    ToolCall,
    Turn,
    correction_message,
    gen_prompt_problems,
    prompt_correction_message,
    with_request_constraints,
    with_request_quotes,
    without_reasoning,
)
from genevolve.tools.base import Tool, ToolContext, ToolResult
from genevolve.trajectory import (
    AnswerEvent,
    Done,
    Event,
    FormatErrorEvent,
    ImageRegistry,
    RoundStart,
    Step,
    Termination,
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
    # A program kept after its failed correction loses its reasoning and protocol words and gets the
    # request's quoted texts back, and the request's own sentence when it lost a subject, count or
    # position, before it is rendered. GRPO rollouts turn this off: their reward
    # must see what the model wrote.
    tidy_kept_prompt: bool = True


@dataclass(frozen=True)
class Ending:
    """How a run ends and why. A step that ends the run returns one; the run records it once."""

    termination: Termination
    reason: str | None = None


STOPPED_BY_USER = Ending(Termination.CANCELLED, "stopped by the user")


@dataclass
class _Run:
    """One run in progress: its record and the state its rounds share."""

    traj: Trajectory
    registry: ImageRegistry
    ctx: ToolContext
    cancel: threading.Event | None
    tool_calls: int = 0
    corrected: bool = False  # a format error gets one corrective message; a second in a row ends the run
    prompt_corrected: bool = False  # an answer whose gen_prompt fails the check is sent back once
    final_announced: bool = False
    calls_made: set = field(default_factory=set)  # (tool, arguments) of every call so far
    repeated_call: bool = False  # a call was made again word for word

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


# What each step of the loop is: a generator of events that returns the run's Ending, or None
# when the run goes on.
StepEvents = Generator[Event, None, "Ending | None"]


class Agent:
    def __init__(self, policy, tools: dict[str, Tool] | Sequence[Tool], config: AgentConfig | None = None,
                 *, store=None, work_dir: str | Path | None = None, backends: dict[str, str] | None = None):
        self.policy = policy = adopt(policy)  # every capability declared, with its default
        self.tools = tools if isinstance(tools, dict) else {t.name: t for t in tools}
        self.config = config or AgentConfig()
        # A policy trained on one conversation shape (the nano adapter: the compact one) says so.
        self.profile = get_profile(self.config.protocol or policy.preferred_protocol)
        self.system_prompt = self.profile.system_prompt(self.config.system_prompt_path)
        # Each profile has its sampling defaults (official: 0.6 / top_p 0.9 / 4096, no stop strings);
        # a policy keeps whatever its spec set explicitly.
        policy.use_profile_sampling(self.profile.sampling)
        # A replayed recording announces its last round where the recording did.
        recorded_cap = policy.recorded_max_rounds
        if recorded_cap and recorded_cap != self.config.max_rounds:
            import dataclasses

            self.config = dataclasses.replace(self.config, max_rounds=recorded_cap)
        self.store = store
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.gettempdir()) / "genevolve-runs"
        self.backends = dict(backends or {})
        self.backends.setdefault("policy", policy.name)

    # ------------------------------------------------------------------ public API

    def run(self, request: str, images: Sequence[str | Path] = (), **kw) -> Trajectory:
        traj = None
        for event in self.stream(request, images, **kw):
            if isinstance(event, Done):
                traj = event.trajectory
        return traj

    def stream(self, request: str, images: Sequence[str | Path] = (), *,
               cancel: threading.Event | None = None, session: str | None = None) -> Iterator[Event]:
        traj = self._new_trajectory(request, session)
        started = time.perf_counter()
        try:
            ending = yield from self._loop(traj, images, cancel)
        except GeneratorExit:
            # The consumer walked away (browser closed, stop pressed): keep what we have.
            self._finish(traj, Ending(Termination.CANCELLED, "the caller stopped reading events"), started)
            raise
        except Exception as exc:  # noqa: BLE001 - never an exception into the caller
            ending = Ending(Termination.POLICY_ERROR, f"internal error: {type(exc).__name__}: {exc}")
        self._finish(traj, ending, started)
        yield Done(trajectory=traj)

    # ------------------------------------------------------------------ the loop

    def _loop(self, traj: Trajectory, user_images, cancel) -> Generator[Event, None, Ending]:
        """Start, then one round at a time until a round ends the run or the rounds run out."""
        registry = ImageRegistry()
        ctx = ToolContext(registry=registry, work_dir=self.work_dir / traj.id, offline=self.config.offline,
                          request=traj.request, profile=self.profile)
        run = _Run(traj, registry, ctx, cancel)
        ending = yield from self._start(run, user_images)
        rnd = 0
        while ending is None and rnd < self.config.max_rounds:
            rnd += 1
            ending = yield from self._round(run, rnd)
        return ending or self._out_of_rounds()

    def _start(self, run: _Run, user_images) -> StepEvents:
        """The user's images, the request check, the conversation's opening and the first save."""
        traj, registry = run.traj, run.registry
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
        run.ctx.user_images = [registry.get(i) for i in traj.user_image_ids]
        traj.images = registry.list()  # a run that ends before any tool call still lists the user's images
        problem = request_problem(traj.request, len(traj.user_image_ids))
        if problem:  # nothing to plan: say so rather than draw a generic image
            yield WarningEvent(message=problem)
            return Ending(Termination.INVALID_REQUEST, problem)
        listing = ", ".join(f"{i} ({registry.get(i).title})" for i in traj.user_image_ids)
        request_message = self.profile.request_message(traj.request, listing or None)
        traj.system_prompt, traj.request_message = self.system_prompt, request_message
        # The official runtime sends text only, the user's images by id.
        traj.images_in_messages = not self.profile.text_only
        # Recorded as "running" before the first round, so a killed process still leaves the
        # request (and its user images) in the store; the final save replaces this row.
        self._save(traj)
        return None

    def _round(self, run: _Run, rnd: int) -> StepEvents:
        """One round: the policy's turn, then what the turn holds (a tool call, an answer or neither)."""
        if run.cancelled:
            return STOPPED_BY_USER
        cfg, prof = self.config, self.profile
        final = (prof.is_final_round(rnd, run.tool_calls, cfg.max_rounds, cfg.max_tool_calls)
                 or (run.repeated_call and prof.answers_after_a_repeated_call))
        yield RoundStart(round=rnd, final=final)
        round_t0 = time.perf_counter()
        step = Step(round=rnd)
        if final and not run.final_announced:
            step.notice = prof.final_message()
            run.final_announced = True
        run.traj.steps.append(step)
        # A turn that may not call a tool (our profile after the last-round notice) is an answer.
        self._prepare_turn(run, answer_only=prof.route("tool_call", final) != "tool_call")
        ending = yield from self._policy_turn(run, step, round_t0)
        if ending is not None:
            return ending
        turn = prof.parse_turn(step.assistant_text)
        step.think = turn.think
        # The profile decides which step the turn leads to; each step is one method below.
        route = prof.route(turn.kind, final)
        if route == "tool_call":
            return (yield from self._tool_call(run, step, turn.tool_call, round_t0))
        if route == "official_answer":
            return (yield from self._official_answer(run, step, turn, final, round_t0))
        if route == "late_tool_call":
            return (yield from self._format_error(run, step, f"{LAST_ROUND_RULE}; an answer is due",
                                                  round_t0))
        if route == "format_error":
            return (yield from self._format_error(run, step, turn.error, round_t0))
        return (yield from self._answer(run, step, turn, round_t0))

    def _prepare_turn(self, run: _Run, answer_only: bool) -> None:
        """Tell a policy that decodes under the turn grammar what this turn may say (tools, shown
        images: whose they are and which match the request)."""
        from genevolve.policies.grammar import turn_rules

        from genevolve.relevance import picture_matches

        shown = run.registry.list()
        request = run.traj.request
        self.policy.prepare_turn(turn_rules(
            self.tools, [i.img_id for i in shown], user_ids=[i.img_id for i in shown if i.source == "user"],
            matching_ids=[i.img_id for i in shown
                          if i.source != "user" and picture_matches(request, i.title or "", i.caption or "")],
            max_references=self.config.max_references, answer_only=answer_only))

    def _policy_turn(self, run: _Run, step: Step, round_t0: float) -> StepEvents:
        """Stream the policy's turn into the step; a failure or a stop ends the run."""
        chunks: list[str] = []
        try:
            for delta in self.policy.stream(run.traj.messages, run.registry.list()):
                if run.cancelled:
                    break
                if delta:
                    chunks.append(delta)
                    yield TextDelta(round=step.round, text=delta, stats=self.policy.stats())
        except Exception as exc:  # noqa: BLE001
            step.kind, step.error = "policy_error", f"{type(exc).__name__}: {exc}"
            step.assistant_text = "".join(chunks)
            step.policy_s = step.round_s = time.perf_counter() - round_t0
            return Ending(Termination(self.profile.termination(Termination.POLICY_ERROR)), step.error)
        for w in self.policy.take_warnings():
            run.traj.warnings.append(w)
            yield WarningEvent(message=w, round=step.round)
        if run.cancelled:
            step.assistant_text = "".join(chunks)
            return STOPPED_BY_USER
        step.assistant_text = self.profile.finish_turn("".join(chunks))
        step.policy_s = time.perf_counter() - round_t0
        return None

    def _tool_call(self, run: _Run, step: Step, call: ToolCall, round_t0: float) -> StepEvents:
        """Run the call (or give back the recorded reply) and answer the turn with its result."""
        run.tool_calls += 1
        step.kind, step.tool_name, step.tool_arguments = "tool_call", call.name, call.arguments
        said = (call.name, json.dumps(call.arguments, sort_keys=True, default=str))
        run.repeated_call = run.repeated_call or said in run.calls_made
        run.calls_made.add(said)
        yield ToolCallEvent(round=step.round, name=call.name, arguments=call.arguments)
        tool_t0 = time.perf_counter()
        result = self._recorded_reply(call.name, run.registry) or self._call_tool(call.name, call.arguments, run.ctx)
        step.tool_s = time.perf_counter() - tool_t0
        step.tool_text, step.tool_backend, step.error = result.text, result.backend, result.error
        step.tool_images = [i.img_id for i in result.images]
        step.reply = self.profile.tool_response(result.text)
        step.round_s = time.perf_counter() - round_t0
        run.traj.images = run.registry.list()
        yield ToolResultEvent(round=step.round, name=call.name, text=result.text, images=list(result.images),
                              elapsed_s=step.tool_s, error=result.error, backend=result.backend)
        run.corrected = False
        return None

    def _format_error(self, run: _Run, step: Step, error: str, round_t0: float) -> StepEvents:
        """An unusable turn: one corrective message, unless the last turn was one too or no round is left."""
        step.kind, step.error = "format_error", error
        step.round_s = time.perf_counter() - round_t0
        yield FormatErrorEvent(round=step.round, error=error, text=step.assistant_text)
        last_round = step.round == self.config.max_rounds
        if run.corrected or last_round:
            return Ending(Termination.MAX_ROUNDS if last_round else Termination.FORMAT_ERROR,
                          f"round {step.round}: {error}")
        run.corrected = True
        step.reply = correction_message(error)
        return None

    def _answer(self, run: _Run, step: Step, turn: Turn, round_t0: float) -> StepEvents:
        """An answer: parsed and validated; an invalid one gets a correction first, then is repaired."""
        cfg = self.config
        try:
            program = Program.from_answer(turn.answer)
        except ProgramError as exc:
            return (yield from self._format_error(run, step, str(exc), round_t0))
        known = run.registry.ids()
        issues = validate_program(program, known, cfg.max_references)
        if issues and not run.corrected and step.round < cfg.max_rounds:
            return (yield from self._format_error(run, step, self._validation_error(run, program, issues), round_t0))
        repairs: list[str] = []
        if issues:
            program, repairs = repair_program(program, known, cfg.max_references, run.traj.request)
            run.traj.warnings.extend(f"program repaired: {r}" for r in repairs)
        # The gen_prompt must keep the request's quoted texts, counts and positions and hold none of the
        # model's reasoning: one correction saying what is wrong, then the program is kept with a warning.
        # An answer that is itself the reply to a correction is not sent back again (one in a row).
        from genevolve.relevance import (bound_references, carried_facts, colour_grounds, invented_colours,
                                         search_sources, unsupported_facts)

        # "Facts" in the program that none of the run's search results holds, facts a search gave about
        # something else (the Eiffel Tower in a program about Mars, found by "Champ de Mars"), and what
        # may give a thing its colour: the reward's own tests, so a student that never learned the
        # teacher's relevance gets told once and the renderer never gets them.
        request = run.traj.request
        evidence = search_sources(run.traj)
        carried = carried_facts(program.gen_prompt, request, evidence)
        grounds = colour_grounds(run.traj, evidence, bound_references(program, run.traj, request))
        checks = {"unsupported": unsupported_facts(program.gen_prompt, request, evidence, carried),
                  "bound": len(program.reference_images),
                  "off_request": [f["fact"] for f in carried if not f["relevant"]],
                  "colours_nobody_gave": lambda text: invented_colours(text, request, grounds)}
        problems = gen_prompt_problems(request, program.gen_prompt, turn.think, **checks)
        left_out = self._left_out_picture(run, program)
        if (problems or left_out) and not run.prompt_corrected and not run.corrected and step.round < cfg.max_rounds:
            run.prompt_corrected = True
            step.kind = "format_error"
            step.error = "; ".join(([f"{PROMPT_CHECK}: " + "; ".join(problems)] if problems else [])
                                   + ([left_out] if left_out else []))
            step.reply = prompt_correction_message(problems, left_out)
            step.round_s = time.perf_counter() - round_t0
            yield FormatErrorEvent(round=step.round, error=step.error, text=step.assistant_text)
            return None
        if problems and cfg.tidy_kept_prompt:
            # Kept after its correction: the renderer still gets no reasoning or protocol words.
            # And the user's quoted texts reach it verbatim, even when the model dropped one.
            cleaned, removed = without_reasoning(request, program.gen_prompt, turn.think, **checks)
            cleaned, added = with_request_quotes(run.traj.request, cleaned)
            cleaned, restored = with_request_constraints(run.traj.request, cleaned)
            if restored:
                # The model's own first sentence is spared the cuts (it describes the image); once the
                # request's sentence leads, it is checked like the rest ("A cake will have exactly 2
                # people…" stayed first and whole in a program for "a photo of a bench").
                cleaned, cut = without_reasoning(request, cleaned, turn.think, **checks)
                removed = [*removed, *cut]
            if removed or added or restored:
                program = program.model_copy(update={"gen_prompt": cleaned})
                if removed:
                    run.traj.warnings.append("program cleaned: took out " + ", ".join(f'"{r}"' for r in removed))
                if added:
                    run.traj.warnings.append("program repaired: added the quoted text "
                                             + ", ".join(f'"{q}"' for q in added))
                if restored:
                    run.traj.warnings.append("program repaired: the request's own words describe the image, "
                                             "which had lost " + ", ".join(restored))
                    program = self._with_cited_user_pictures(run, program)
                problems = gen_prompt_problems(request, program.gen_prompt, turn.think, **checks)
        said = repeated_sentences(program.gen_prompt) if cfg.tidy_kept_prompt else []
        if said:
            # A decoding loop: each sentence once. No correction turn, so GRPO's rollouts (which run
            # untidied, and whose reward costs the loop) see the same turns as before.
            program = program.model_copy(update={"gen_prompt": without_repeats(program.gen_prompt)})
            run.traj.warnings.append("program cleaned: kept once what it said more than once: "
                                     + ", ".join(f'"{r}"' for r in said[:3]))
        if problems:
            warning = f"{PROMPT_CHECK}: " + "; ".join(problems)
            run.traj.warnings.append(warning)
            yield WarningEvent(message=warning, round=step.round)
        if left_out:  # not bound for the model: whether a picture fits stays the policy's call
            run.traj.warnings.append(left_out)
            yield WarningEvent(message=left_out, round=step.round)
        step.kind = "answer"
        step.round_s = time.perf_counter() - round_t0
        self._adopt_program(run, program)
        yield AnswerEvent(round=step.round, program=program, forced=run.final_announced, repairs=repairs)
        return Ending(Termination.FORCED_ANSWER if run.final_announced else Termination.ANSWER)

    def _with_cited_user_pictures(self, run: _Run, program: Program) -> Program:
        """``program`` binding the user's own pictures that the request's words, put back into its
        gen_prompt, cite by ordinal ("the astronaut from the first image"): those words are the
        user's, and in them "the first image" is the user's first picture. Without this the kept
        program pointed the renderer at a picture it never got (a nano answer that lost the
        astronaut had the request's sentence restored, and bound nothing)."""
        bound = [r.img_id for r in program.reference_images]
        cited = max((ORDINAL_INDEX[m.group(1).lower()] for m in ORDINAL_REF_RE.finditer(program.gen_prompt)
                     if m.group(0).lower() in run.traj.request.lower()), default=0)
        free = [i for i in run.traj.user_image_ids if i not in bound]
        if cited <= len(bound) or not free:
            return program
        add = free[: max(0, min(cited, self.config.max_references) - len(bound))]
        if not add:
            return program
        refs = sorted([*program.reference_images, *(Reference(img_id=i, note="the user's own image") for i in add)],
                      key=lambda r: id_number(r.img_id))
        run.traj.warnings.append("program repaired: bound the user's picture " + ", ".join(add)
                                 + " that the request's own words cite")
        return program.model_copy(update={"reference_images": refs})

    def _validation_error(self, run: _Run, program: Program, issues: list) -> str:
        """The correction for an invalid program: each problem once ("'first image' but only 0 …"
        came four times when a prompt cited the picture twice in two wordings), and, when it cites a
        picture it does not list, the user's own pictures it may list: a student that wrote "0
        reference image(s)" in its thought is told which id it forgot."""
        lines = list(dict.fromkeys(i.message for i in issues))
        listed = {r.img_id for r in program.reference_images}
        unlisted = [i for i in run.traj.user_image_ids if i not in listed]
        if unlisted and any(i.code == "ordinal_out_of_range" for i in issues):
            shown = ", ".join(f"{i} ({run.registry.get(i).title})" for i in unlisted)
            lines.append(f"the user gave {shown}: list it in reference_images to use it, or describe the "
                         "image without pointing at a picture")
        return "; ".join(lines)

    def _left_out_picture(self, run: _Run, program: Program) -> str | None:
        """The answer check's line when the run found a picture of something the request names
        (``relevance.picture_matches``, the reward's test) and the program binds none such while it
        has room for one; None otherwise. The reward already pays less for such a program; the line
        says which picture, so that one correction can fix it (nano adapters saw it and bound nothing)."""
        from genevolve.program import ORDINALS
        from genevolve.protocol import left_out_picture_problem
        from genevolve.relevance import picture_matches

        request = run.traj.request
        fits = lambda img: img is not None and picture_matches(request, img.title or "", img.caption or "")
        bound = [run.registry.get(r.img_id) for r in program.reference_images]
        if len(bound) >= self.config.max_references or any(fits(img) for img in bound):
            return None
        for past in run.traj.steps:
            if past.kind != "tool_call" or past.tool_name != "image_search":
                continue
            for img_id in past.tool_images:
                img = run.registry.get(img_id)
                if fits(img) and img.source != "user":
                    subject = str((past.tool_arguments or {}).get("query") or "").strip() or img.title
                    return left_out_picture_problem(img_id, img.title, subject, ORDINALS[len(bound)])
        return None

    def _official_answer(self, run: _Run, step: Step, turn: Turn, final: bool, round_t0: float) -> StepEvents:
        """A turn without a tool call, handled as the official runtime does: a nudge or an answer."""
        traj = run.traj
        if turn.kind == "error":
            step.kind, step.error = "format_error", turn.error
            step.round_s = time.perf_counter() - round_t0
            if not final:
                step.reply = official.format_nudge()
            yield FormatErrorEvent(round=step.round, error=turn.error, text=step.assistant_text)
            # The last round had no answer: the run ends without a program; otherwise the model tries again.
            return Ending(Termination.NO_ANSWER, "no_answer_in_final_round") if final else None
        gen_prompt, refs, dropped = official.resolve_answer(turn.answer, run.registry.ids(), self.config.max_references)
        if dropped:
            traj.warnings.append("answer cited image ids never shown, dropped as the official runtime does: "
                                 + ", ".join(repr(i) for i in dropped))
        step.kind = "answer"
        step.round_s = time.perf_counter() - round_t0
        traj.images = run.registry.list()
        if not gen_prompt and not refs:
            reason = "the answer has no gen_prompt"
            yield WarningEvent(message=reason, round=step.round)
            return Ending(Termination.ANSWER, reason)
        if not gen_prompt:  # the official runtime keeps the resolved references of an empty prompt
            traj.warnings.append("the answer has an empty gen_prompt; its references are kept, as the "
                                 "official runtime keeps them")
        program = Program(gen_prompt=gen_prompt, reference_images=[Reference(**r) for r in refs])
        self._adopt_program(run, program)
        yield AnswerEvent(round=step.round, program=program, forced=final, repairs=[])
        return Ending(Termination.ANSWER)

    def _adopt_program(self, run: _Run, program: Program) -> None:
        """The run's program: references pointed at their files, constraints read from the request."""
        for ref in program.reference_images:
            img = run.registry.get(ref.img_id)
            ref.path = img.path if img else None
        # URLs, file paths and template tokens from the request or the answer never reach the
        # renderer: not in the prompt, the notes, or the constraints read from the request.
        scrubbed, notes = scrub_program(program, run.traj.request)
        if notes:
            for field in ("gen_prompt", "reference_images"):
                setattr(program, field, getattr(scrubbed, field))
            run.traj.warnings.extend(notes)
        request, _ = scrub_injected(run.traj.request, quoted_strings(run.traj.request))
        program.constraints = derive_constraints(request, program)
        run.traj.program = program
        run.traj.images = run.registry.list()

    def _out_of_rounds(self) -> Ending:
        return Ending(Termination(self.profile.termination(Termination.MAX_ROUNDS)),
                      f"no answer within {self.config.max_rounds} rounds")

    # ------------------------------------------------------------------ around the loop

    def _new_trajectory(self, request: str, session: str | None) -> Trajectory:
        traj = Trajectory(request=request)
        traj.backends = dict(self.backends)
        traj.meta["offline"] = self.config.offline
        traj.meta["protocol"] = self.profile.name
        traj.meta.update(self.profile.trajectory_meta())
        if session:
            traj.meta["session"] = session
        return traj

    def _recorded_reply(self, name: str, registry: ImageRegistry) -> ToolResult | None:
        """A replayed official run answers its tool calls with the recorded replies (nothing is rerun)."""
        text = self.policy.recorded_tool_reply()
        if text is None:
            return None
        from genevolve.official.records import recorded_images

        images = []
        for ref in recorded_images(text) if name == "image_search" else []:
            if registry.get(ref.img_id) is None:
                registry.add(ref)  # the recorded id and file, as the recorded run listed them
            images.append(registry.get(ref.img_id))
        return ToolResult(text=text, images=images, backend="recorded",
                          error=text if text.startswith("[tool error]") else None)

    def _call_tool(self, name: str, args: dict, ctx: ToolContext) -> ToolResult:
        tool = self.tools.get(name)
        if tool is None:
            return ToolResult(text=self.profile.unknown_tool_text(name, list(self.tools)), error=f"unknown tool {name}")
        try:
            result = tool(args, ctx)
        except Exception as exc:  # noqa: BLE001 - a broken tool is reported to the model
            return ToolResult(text=self.profile.tool_error_text(name, exc), error=f"{type(exc).__name__}: {exc}")
        for ref in result.images:
            if ctx.registry.get(ref.img_id) is None:  # tools register; guard against a stray ref
                ctx.registry.add(ref)
        return result

    def _finish(self, traj: Trajectory, ending: Ending, started: float) -> None:
        """The one place a run's termination is recorded; then the final save."""
        traj.termination, traj.reason = ending.termination, ending.reason
        traj.elapsed_s = time.perf_counter() - started
        self._save(traj)

    def _save(self, traj: Trajectory) -> None:
        if self.store is None:
            return
        try:
            self.store.save_trajectory(traj)
        except Exception as exc:  # noqa: BLE001 - a full disk must not hide the result
            traj.warnings.append(f"could not save the trajectory: {exc}")


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
