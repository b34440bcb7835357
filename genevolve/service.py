"""One generate request from start to end, the way both ``genevolve run`` and the studio's Generate tab do it.

    GenerateForm ─check─▶ agent (streaming events) ─▶ render ─▶ verify ─▶ store ─▶ GenerateResult

``GenerateForm`` is the one declaration of the generate form's fields: the studio builds its widgets,
keeps the form per session and runs it from this list; the CLI reads its options' help and defaults
from it. ``generate`` is the one path from a form to a saved, rendered and checked run; each front
end only shows what it reports (the CLI prints, the studio updates the page).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from genevolve.errors import UserError
from genevolve.program import request_problem
from genevolve.specs import spec_kind

# ---------------------------------------------------------------- the form


class GenerateForm(BaseModel):
    """What one generate request names. Field order is the studio form's order; ``description`` is
    the CLI's help text, ``title`` the studio's label. ``four_bit`` and ``adapter`` only refine a
    local-model policy spec (``policy_spec``); the CLI writes them into the spec itself."""

    model_config = ConfigDict(extra="forbid")

    request: str = Field("", title="Request", description="What to draw, in words.")
    uploads: list[str] = Field(
        default_factory=list, title="Your reference images (optional)",
        description="A reference image of yours (repeatable). Under --protocol official the request is sent as the "
                    "official runtime sends it (it takes no user images): yours reach the model only as "
                    "image_search results.")
    policy: str = Field("planner", title="Policy",
                        description="planner | nano | hf:<id>[?4bit=1&adapter=P] | openai:<model>@<url> | replay:<file>")
    four_bit: bool = Field(False, title="4-bit (local models)")
    adapter: str = Field("", title="LoRA adapter path (local models)")
    renderer: str = Field("layout", title="Renderer",
                          description="layout | diffusers:<id> | service:<url> | gemini[:<model>] | none")
    typeset: bool = Field(False, title="Typeset exact text onto the image",
                          description="Set the exact text constraints onto a generative render.")
    offline: bool = Field(True, title="Offline (local corpus and image library)",
                          description="No network at all (default: when the web is unreachable).")
    seed: int = Field(0, title="Seed", description="Renderer seed.")
    protocol: str = Field("", title="Protocol",
                          description="Conversation profile: genevolve | nano | official:<path to the official "
                                      "release> (default: the policy's own, else genevolve).")

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_default(cls, value, info):
        """A page sends None for an empty box: that is the field's default, not an error."""
        if value is None:
            field = cls.model_fields[info.field_name]
            return field.get_default(call_default_factory=True)
        return value

    @field_validator("uploads", mode="before")
    @classmethod
    def _paths(cls, value):
        """A page's file values are paths or objects with a ``name`` (Gradio's FileData)."""
        return [str(getattr(item, "name", item)) for item in value or []]

    @field_validator("seed", mode="before")
    @classmethod
    def _whole_seed(cls, value):
        return int(value or 0)  # a number box sends 7.0

    @classmethod
    def help(cls, name: str) -> str:
        """The CLI's help text of one field."""
        return cls.model_fields[name].description or ""

    @classmethod
    def from_values(cls, values) -> "GenerateForm":
        """The form from its field values in ``FORM_FIELDS`` order (how a page sends them)."""
        values = list(values)
        if len(values) != len(FORM_FIELDS):
            raise ValueError(f"a generate form has {len(FORM_FIELDS)} fields, got {len(values)} values")
        return cls(**dict(zip(FORM_FIELDS, values)))

    def values(self) -> tuple:
        """The field values in ``FORM_FIELDS`` order (how a page shows them)."""
        return tuple(getattr(self, name) for name in FORM_FIELDS)

    def policy_spec(self) -> str:
        return compose_policy_spec(self.policy, self.four_bit, self.adapter)


FORM_FIELDS: tuple[str, ...] = tuple(GenerateForm.model_fields)


def compose_policy_spec(base: str, four_bit: bool, adapter: str | None) -> str:
    """The policy spec with the 4-bit and adapter options (only local models take them)."""
    base = (base or "planner").strip()
    # The kind, not the text before the first ":" ("nano?4bit=1" is a nano spec with no target).
    if spec_kind(base) not in ("hf", "nano"):
        return base
    params = []
    if four_bit and "4bit=" not in base:
        params.append("4bit=1")
    if adapter and adapter.strip() and "adapter=" not in base:
        params.append(f"adapter={adapter.strip()}")
    if not params:
        return base
    return base + ("&" if "?" in base else "?") + "&".join(params)


# ---------------------------------------------------------------- checks before any work


def check_request(form: GenerateForm) -> None:
    """The request's own limits (empty, too long): UserError in the library's words."""
    problem = request_problem(form.request, len(form.uploads))
    if problem:
        raise UserError(problem)


def check(form: GenerateForm) -> None:
    """Everything the form names, checked before any work starts: UserError with one line."""
    from genevolve.inputs import check_reference_image, check_renderer_spec

    check_request(form)
    for path in form.uploads:
        check_reference_image(path)
    if form.renderer != "none":
        check_renderer_spec(form.renderer)


# ---------------------------------------------------------------- the run


@dataclass
class AgentReady:
    """Reported once the agent is built, before its first round: which backends serve this run."""

    backends: dict
    offline: bool
    type: str = "agent_ready"


@dataclass
class RenderStart:
    """Reported when the program goes to the renderer."""

    renderer: str
    type: str = "render_start"


@dataclass
class GenerateResult:
    """What one run produced. ``render_error`` says why there is no image although there is a program
    (``render_failure`` is the exception, for a front end that words it its own way)."""

    trajectory: Any
    offline: bool
    image_path: str | None = None
    render: dict | None = None
    verification: dict | None = None
    checked: str | None = None  # one line: what the verification covered and what it did not
    render_error: str | None = None
    render_failure: BaseException | None = None
    save_error: str | None = None  # why the trajectory is not in the store (read back), or None

    def to_json(self) -> dict:
        """The CLI's ``--json`` answer."""
        out = {"summary": self.trajectory.summary(), "offline": self.offline, "image": None, "verification": None}
        if self.render_error is not None:
            out["render_error"] = self.render_error
        elif self.image_path is not None:
            out.update(image=self.image_path, render=self.render, verification=self.verification,
                       checked=self.checked)
        return out


def generate(form: GenerateForm, *, settings, store, on_event: Callable[[Any], None] | None = None,
             cancel: threading.Event | None = None, session: str | None = None, policy=None, renderer=None,
             image_dir: Path | Callable[[str], Path] | None = None) -> GenerateResult:
    """Check the form, run the agent (every event goes to ``on_event`` as it happens), render the
    program, verify the image and save it all to ``store``.

    ``settings`` supplies what the form does not name (tool backends, limits, system prompt); its
    policy, renderer and protocol are the form's. ``policy``/``renderer`` are already built backends
    to reuse (the studio caches them); ``image_dir`` is where image.png goes (a folder, or one per run
    id; default ``settings.runs_dir/<run id>``). Bad input raises UserError before any work; a
    renderer or verifier failure is reported in the result; a full disk or broken store raises.
    """
    import dataclasses

    from genevolve.agent import build_agent

    check(form)
    emit = on_event or (lambda event: None)
    settings = dataclasses.replace(settings, policy=form.policy_spec(), renderer=form.renderer,
                                   protocol=form.protocol or settings.protocol)
    try:
        agent = build_agent(settings, store=store, policy=policy, offline=form.offline)
    except Exception as exc:  # noqa: BLE001 - a missing model or key is a one-line message
        raise UserError(str(exc)) from exc
    emit(AgentReady(backends=dict(agent.backends), offline=form.offline))
    traj = None
    for event in agent.stream(form.request, form.uploads, cancel=cancel, session=session):
        emit(event)
        if event.type == "done":
            traj = event.trajectory
    result = GenerateResult(trajectory=traj, offline=form.offline)
    if traj.program is not None and form.renderer != "none" and not (cancel is not None and cancel.is_set()):
        emit(RenderStart(renderer=form.renderer))
        folder = image_dir(traj.id) if callable(image_dir) else image_dir or Path(settings.runs_dir) / traj.id
        _render_and_verify(result, form, renderer, store, Path(folder))
    result.save_error = _save_error(store, traj)
    return result


def _render_and_verify(result: GenerateResult, form: GenerateForm, renderer, store, folder: Path) -> None:
    from genevolve.durable import save_image_atomic

    traj = result.trajectory
    try:
        from genevolve.judges.verify import verify_image
        from genevolve.renderers import make_renderer, render_with_report
    except ModuleNotFoundError as exc:  # renderers not installed in this build
        result.render_error, result.render_failure = str(exc), exc
        return
    try:
        image, report = render_with_report(renderer or make_renderer(form.renderer), traj.program, seed=form.seed,
                                           typeset=form.typeset)
    except Exception as exc:  # noqa: BLE001 - a renderer failure leaves the program, which is still a result
        result.render_error, result.render_failure = f"{type(exc).__name__}: {exc}", exc
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "image.png"
    save_image_atomic(image, path)  # a full disk leaves no half-written image.png behind
    try:
        verification = verify_image(image, traj.program, (report or {}).get("layout"))
    except Exception as exc:  # noqa: BLE001 - an image without a check is still an image
        verification = {"error": f"verification unavailable: {_first_line(exc)}", "constraints": []}
    store.attach_render(traj.id, str(path), report, None if verification.get("error") else verification)
    from genevolve.judges.structure import verification_summary

    result.image_path, result.render, result.verification = str(path), report, verification
    result.checked = verification_summary(verification, report, traj.program.constraints)


def _save_error(store, traj) -> str | None:
    """Why the trajectory is not in the store, or None: read back, never assumed."""
    try:
        if store.get_run(traj.id) is not None:
            return None
    except Exception as exc:  # noqa: BLE001 - an unreadable store is itself the answer
        return f"{type(exc).__name__}: {exc}"
    failed = [w for w in traj.warnings if w.startswith("could not save")]
    return failed[-1] if failed else "no row with that id"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
