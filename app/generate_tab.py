"""Generate tab: request + references + backends in, a live trajectory, a program, an image and its check out.

A run is ``genevolve.service.generate`` (the same path as ``genevolve run``) on a worker thread; the
handler is a generator that follows it: every agent event is pushed to the page the moment it
happens (thinking text is batched to ~12 updates a second so a fast policy cannot flood the socket).
The form's fields are ``GenerateForm``'s; ``app.generate_form`` keeps them per session.
Stop sets the session's cancel flag; the agent checks it between tokens and rounds and ends
the trajectory as ``cancelled``, which is then saved like any other run.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from pathlib import Path

import gradio as gr

from app import live_runs, sessions, storage, upload_limits, zerogpu
from app.generate_form import remember_form, takes_form
from app.markup import esc
from app.trajectory_view import EventPanel, program_html, verification_html
from genevolve import service
from genevolve.errors import UserError
from genevolve.event_view import EventView
from genevolve.program import MAX_REQUEST_CHARS
from genevolve.service import FORM_FIELDS, GenerateForm
from genevolve.specs import spec_kind
from genevolve.trajectory import WarningEvent

POLICY_CHOICES = ["planner", "nano", "hf:Qwen/Qwen3-VL-2B-Instruct", "openai:gpt-4o-mini@https://api.openai.com/v1"]
RENDERER_CHOICES = ["layout", "diffusers:Qwen/Qwen-Image-Edit", "service:http://127.0.0.1:8001", "gemini", "none"]
EXAMPLES = [
    'A 1990s travel-magazine cover of two backpackers in front of the Eiffel Tower, title "PARIS" in bold serif',
    'A minimalist poster for a jazz night with a saxophone silhouette, headline "BLUE NOTES" and the date "FRI 12 JUNE"',
    'An infographic of the water cycle with three labelled stages: "EVAPORATION", "CONDENSATION", "PRECIPITATION"',
]
HISTORY_COLUMNS = ["run", "when", "request", "result", "text check"]
THINK_EVERY_S = 0.08

_policy_lock = threading.Lock()
_policies: dict[str, object] = {}
_renderers: dict[str, object] = {}


def _policy(spec: str):
    """Policies are cached by spec: loading a local model once per run would dominate its latency."""
    from genevolve.policies import make_policy

    with _policy_lock:
        if spec not in _policies:
            _policies[spec] = make_policy(spec)
        return _policies[spec]


def _renderer(spec: str):
    from genevolve.renderers import make_renderer

    with _policy_lock:
        if spec not in _renderers:
            _renderers[spec] = make_renderer(spec)
        return _renderers[spec]


# ---------------------------------------------------------------- hints for the chosen backends

def _policy_kind(spec: str | None) -> str:
    return spec_kind(spec, "planner")


def nano_card_text() -> str:
    """The shipped adapter's model card (what it was trained on, how it scores), without its YAML header."""
    from genevolve.policies.local import NANO_ADAPTER_DIR

    card = NANO_ADAPTER_DIR / "README.md"
    if not card.is_file():
        return "No trained nano adapter is installed (assets/adapters/nano): `nano` runs the untuned base."
    text = card.read_text(encoding="utf-8")
    if text.startswith("---"):
        text = text.split("---", 2)[2]
    return text.strip()


def policy_hint(spec: str | None) -> str:
    """One line on what the chosen policy is and what running it costs."""
    spec = (spec or "planner").strip()
    kind = _policy_kind(spec)
    if kind == "planner":
        return "planner: a rule-based expert; runs offline in about a second, no model"
    if kind == "nano":
        from genevolve.policies.local import nano_base_warning

        text = ("nano: GenEvolve-Nano, Gemma 3 270M with our LoRA adapter trained on a CPU (model card below; "
                "loads on first use; about 10 to 20 s a request on 2 cores; waits for the shared model slot)")
        if nano_base_warning("given" if "adapter=" in spec else None):
            text += " ⚠ no trained adapter is installed: the base model is untrained for the tool protocol, " \
                    "expect format errors"
        return text
    if kind == "hf":
        return "a local transformers model: loads into this process and waits for the shared model slot"
    if kind == "openai":
        return "an OpenAI-compatible endpoint: needs OPENAI_API_KEY for api.openai.com; never waits for the model slot"
    if kind == "replay":
        return "replays the turns of a saved trajectory file"
    return "unknown policy: use planner, nano, hf:<id-or-path>, openai:<model>@<url> or replay:<file>"


def renderer_hint(spec: str | None) -> str:
    kind = (spec or "layout").split(":", 1)[0].strip().lower()
    return {
        "layout": "layout: an offline comp on the CPU (text typeset, subjects as photos, pictograms or unlettered placeholder panels)",
        "diffusers": "diffusers: a local pipeline; its weights must already be on disk when offline",
        "service": "service: a renderer server (genevolve serve-renderer) at that URL",
        "gemini": "gemini: Google's image model; needs GEMINI_API_KEY and the network",
        "none": "none: stop at the program, draw nothing",
    }.get(kind, "unknown renderer: use layout, diffusers:<id-or-path>, service:<url>, gemini or none")


# ---------------------------------------------------------------- UI

PLACEHOLDER = "Describe the image you want: what is in it, any exact words, the style…"
DEFAULTS = GenerateForm()


def _label(name: str) -> str:
    return GenerateForm.model_fields[name].title


def build(sid_state, tabs=None):
    with gr.Row(equal_height=False, elem_id="ge-generate"):
        with gr.Column(scale=5, min_width=380):
            request = gr.Textbox(label=_label("request"), lines=3, max_lines=12, elem_id="ge-request", placeholder=PLACEHOLDER,
                                 info=f"At most {MAX_REQUEST_CHARS:,} characters.")
            gr.Examples(EXAMPLES, inputs=[request], label="Try")
            uploads = gr.File(label=_label("uploads"), file_count="multiple",
                              file_types=["image"], elem_id="ge-uploads", height=140)
            upload_msg = gr.Markdown("", elem_id="ge-upload-msg")
            with gr.Accordion("Backends", open=False, elem_id="ge-backends"):
                with gr.Row():
                    policy = gr.Dropdown(POLICY_CHOICES, value=DEFAULTS.policy, label=_label("policy"),
                                         allow_custom_value=True, elem_id="ge-policy", info=policy_hint(DEFAULTS.policy))
                    renderer = gr.Dropdown(RENDERER_CHOICES, value=DEFAULTS.renderer, label=_label("renderer"),
                                           allow_custom_value=True, elem_id="ge-renderer",
                                           info=renderer_hint(DEFAULTS.renderer))
                with gr.Row():
                    four_bit = gr.Checkbox(DEFAULTS.four_bit, label=_label("four_bit"), elem_id="ge-4bit")
                    adapter = gr.Textbox(label=_label("adapter"), placeholder="runs/sft/checkpoint-final",
                                         elem_id="ge-adapter")
                with gr.Row():
                    typeset = gr.Checkbox(DEFAULTS.typeset, label=_label("typeset"), elem_id="ge-typeset")
                    offline = gr.Checkbox(DEFAULTS.offline, label=_label("offline"), elem_id="ge-offline")
                    seed = gr.Number(DEFAULTS.seed, label=_label("seed"), precision=0, minimum=0, elem_id="ge-seed")
                protocol = gr.Dropdown(["", "genevolve", "nano", "official"], value=DEFAULTS.protocol,
                                       label=_label("protocol"),
                                       allow_custom_value=True, elem_id="ge-protocol",
                                       info="conversation profile; empty: the policy's own. For the released "
                                            "checkpoint: official:/path/to/GenEvolve (your copy of the release)")
                nano_card = gr.Accordion("GenEvolve-Nano model card", open=False, visible=False,
                                         elem_id="ge-nano-card")
                with nano_card:
                    gr.Markdown(nano_card_text(), elem_id="ge-nano-card-text")
            with gr.Row():
                go = gr.Button("Generate", variant="primary", elem_id="ge-go", scale=3)
                stop = gr.Button("Stop", variant="stop", elem_id="ge-stop", scale=1)
            status = gr.Markdown("", elem_id="ge-status")
            image = gr.Image(label="Rendered image", type="filepath", interactive=False, elem_id="ge-image",
                             height=440)
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=300):
                    verify = gr.HTML(verification_html(None), label="Verification", elem_id="ge-verify")
                with gr.Column(scale=1, min_width=260):
                    downloads = gr.File(label="Downloads", file_count="multiple", interactive=False,
                                        elem_id="ge-downloads")
            program = gr.HTML(program_html(None), elem_id="ge-program")
            with gr.Accordion("Your runs (this browser only)", open=False):
                history = gr.Dataframe(headers=HISTORY_COLUMNS, value=[], interactive=False, wrap=True,
                                       elem_id="ge-history")
                refresh = gr.Button("Refresh", size="sm")
        with gr.Column(scale=4, min_width=340, elem_id="ge-side"):
            gr.Markdown("### Live trajectory")
            events = gr.HTML(EventPanel().html(), elem_id="ge-events", padding=False)
            gallery = gr.Gallery(label="Images found (IMG ids)", columns=4, height=180, elem_id="ge-gallery",
                                 allow_preview=True, preview=False, object_fit="cover")

    # The page fields a run updates, by the names the handlers (and live_runs) use for them.
    outputs = {"status": status, "events": events, "gallery": gallery, "program": program, "image": image,
               "verify": verify, "downloads": downloads, "history": history}
    if tuple(outputs) != live_runs.FIELDS:  # a field added on one side only would never reach the page
        raise RuntimeError(f"Generate tab outputs {tuple(outputs)} differ from live_runs.FIELDS {live_runs.FIELDS}")
    fields = {"request": request, "uploads": uploads, "policy": policy, "four_bit": four_bit, "adapter": adapter,
              "renderer": renderer, "typeset": typeset, "offline": offline, "seed": seed, "protocol": protocol}
    if tuple(fields) != FORM_FIELDS:  # a field added to the form schema needs its widget here
        raise RuntimeError(f"Generate tab fields {tuple(fields)} differ from the form's {FORM_FIELDS}")
    form = list(fields.values())
    # The run lives on a worker thread; this event only follows it, so it needs no queue slot of
    # its own (local models queue inside the run, planner runs never wait behind them). On a
    # ZeroGPU Space the whole call runs in the GPU worker, so there a run lasts as long as its page.
    inputs = form + [sid_state]
    run_event = go.click(
        zerogpu.gpu(to_components(takes_form(run_generate), outputs)),
        inputs=inputs,
        outputs=list(outputs.values()), show_progress="hidden", concurrency_limit=None, api_name="generate",
    )
    request.submit(lambda: None, None, None, js="() => document.querySelector('#ge-go').click()")
    stop.click(stop_run, inputs=[sid_state], outputs=[status], queue=False)
    refresh.click(history_rows, inputs=[sid_state], outputs=[history])
    history.select(load_run, inputs=[sid_state], outputs=[status, events, program, image, verify, downloads])
    uploads.upload(accept_uploads, [uploads, sid_state], [uploads, upload_msg]).then(
        remember_form, inputs, None, queue=False).then(clear_refusal, [status], [status], queue=False).then(
        None, None, None, js=CLOSE_UPLOAD_TOASTS)
    uploads.clear(remember_form, inputs, None, queue=False)
    uploads.delete(remember_form, inputs, None, queue=False)
    # A refusal speaks of the upload it answered: removing files or uploading again replaces it.
    uploads.clear(lambda: "", None, [upload_msg], queue=False)
    uploads.delete(lambda: "", None, [upload_msg], queue=False)
    # The form is kept per session on the server, so a reload brings it back.
    for name, comp in fields.items():
        if name == "uploads":  # uploads are remembered once accepted (above)
            continue
        comp.change(remember_form, inputs, None, queue=False, trigger_mode="always_last",
                    show_progress="hidden")
    policy.change(lambda s: gr.update(info=policy_hint(s)), [policy], [policy], queue=False, show_progress="hidden")
    policy.change(lambda s: gr.update(visible=_policy_kind(s) == "nano"), [policy], [nano_card], queue=False,
                  show_progress="hidden")
    renderer.change(lambda s: gr.update(info=renderer_hint(s)), [renderer], [renderer], queue=False,
                    show_progress="hidden")
    return {"request": request, "uploads": uploads, "upload_msg": upload_msg, "history": history,
            "run_event": run_event, "form": form, "outputs": list(outputs.values()),
            "attach": to_components(attach, outputs)}


# ---------------------------------------------------------------- uploads


def accept_uploads(uploads, sid_value, request: gr.Request = None):
    """Keep the uploads that are real images within the limits (copied into the session); say why others were refused."""
    sid = sessions.session_id(sid_value, request)
    kept, refused = upload_limits.copy_uploads(sid, uploads)
    msg = "".join(f"✗ {esc(r)}  \n" for r in refused)
    return kept or None, msg


# Gradio refuses a file over the size limit in the browser, with an error notice that stays until
# closed; once a later upload went through, that notice speaks of a file that is gone.
CLOSE_UPLOAD_TOASTS = """() => { for (const t of document.querySelectorAll('[data-testid="toast-body"]')) {
  if (/maximum allowed size|not an image/i.test(t.innerText)) t.querySelector('[data-testid="toast-close"]')?.click(); } }"""


def clear_refusal(status_text):
    """A run refused for its uploads said so in the status line; a new upload makes that stale."""
    text = (status_text or "").strip()
    if text.startswith("✗") and ("image" in text or "upload" in text or "MB" in text):
        return ""
    return gr.skip()


# ---------------------------------------------------------------- handlers


def stop_run(sid_value, request: gr.Request = None):
    sid = sessions.session_id(sid_value, request)
    sessions.cancel_event(sid).set()
    run = live_runs.registry().current(sid)
    if run is not None and not run.done and run.needs_model and live_runs.registry().queue.position(run.id):
        return gr.update(value="■ Stopping… leaving the queue.")
    return gr.update(value="■ Stopping… the current step finishes, then the run ends as *cancelled*.")


def history_rows(sid_value, request: gr.Request = None) -> list[list]:
    sid = sessions.session_id(sid_value, request)
    rows = []
    for r in storage.store().list_runs(session=sid, limit=50):
        check = {1: "all text found", 0: "text not as asked"}.get(r.get("verified_ok"), "—")
        rows.append([r["id"], time.strftime("%H:%M:%S", time.localtime(r["created_at"])), r["request"][:90],
                     r.get("termination") or "", check])
    return rows


def load_run(sid_value, evt: gr.SelectData, request: gr.Request = None):
    """Open one of this session's past runs (never another session's)."""
    sid = sessions.session_id(sid_value, request)
    row = evt.row_value if evt is not None and getattr(evt, "row_value", None) else None
    run = storage.store().get_run(row[0]) if row else None
    if run is None or run.get("session") != sid:
        return ("Run not found in this session.",) + (None,) * 5
    from genevolve.trajectory import Trajectory
    from app.trajectory_view import timeline_html

    traj = Trajectory.from_dict(run["trajectory"])
    files = _write_downloads(sid, traj, run.get("image_path"), run.get("verification"))
    return (f"Loaded run `{traj.id}` · {traj.termination}", timeline_html(traj, image_path=run.get("image_path")),
            program_html(traj.program, {i.img_id: i.to_dict() for i in traj.images}),
            run.get("image_path"), verification_html(run.get("verification"), run.get("render")), files)


def _write_downloads(sid: str, traj, image_path: str | None, verification: dict | None) -> list[str]:
    out = sessions.session_dir(sid, "runs", traj.id)
    files = []
    if traj.program is not None:
        p = out / "program.json"
        p.write_text(json.dumps(traj.program.model_dump(), indent=2, ensure_ascii=False), encoding="utf-8")
        files.append(str(p))
    t = out / "trajectory.json"
    doc = traj.to_dict()
    if verification:
        doc["verification"] = verification
    t.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    files.append(str(t))
    if image_path and Path(image_path).is_file():
        files.append(str(image_path))
    return files


def to_components(handler, components: dict):
    """A handler that yields ``{field name: value}`` as Gradio wants it: ``{component: value}``.

    The handlers speak in field names so they run (and are tested) without a page; a field
    left out of an update keeps its value on the page."""

    @functools.wraps(handler)  # Gradio reads the signature (the gr.Request parameter) through this
    def stream(*args, **kwargs):
        for fields in handler(*args, **kwargs):
            yield {components[name]: value for name, value in fields.items()} or gr.skip()

    return stream


def follow(run, *, everything_at_end: bool = True):
    """Yield the page fields that changed, as the run changes, until it ends (the run goes on if this stops)."""
    since = 0
    while True:
        clock, changed, done = run.changes(since, timeout=1.0)
        if done and everything_at_end:
            # The last update carries the whole final state, so a caller that keeps only it has everything.
            _, changed, _ = run.changes(0, timeout=0)
        if changed:
            yield changed
        since = clock
        if done:
            return


def attach(sid_value, request: gr.Request = None):
    """On page load: follow the session's run if one is going, or show the one that ended meanwhile."""
    sid = sessions.session_id(sid_value, request)
    run = live_runs.registry().current(sid)
    if run is None:
        yield {}  # nothing to show: every field keeps its value
        return
    yield from follow(run)


def run_generate(form: GenerateForm, sid_value, request: gr.Request = None):
    """Start a run of ``form`` for this session (or re-attach to the one going) and stream it into
    the page as ``{field: value}`` updates of the fields in ``live_runs.FIELDS``. The page calls it
    through ``takes_form`` (the form's fields, then the session id)."""
    sid = sessions.session_id(sid_value, request)
    form = form.model_copy(update={"request": form.request.strip()})
    reg = live_runs.registry()
    going = reg.current(sid)
    if going is not None and not going.done:
        yield {"status": f"● This session's run `{esc(going.label)}` is still going: showing it (Stop ends it)."}
        yield from follow(going)
        return
    if not form.request:
        yield {"status": "Write a request first."}
        return
    try:  # the library's limit and words, the same as the CLI's
        service.check_request(form)
    except UserError as exc:
        yield {"status": "✗ " + esc(str(exc))}
        return
    kept, refused = upload_limits.copy_uploads(sid, form.uploads)
    if refused:
        yield {"status": "✗ " + esc("; ".join(refused))}
        return
    form = form.model_copy(update={"uploads": kept})
    cancel = sessions.cancel_event(sid, fresh=True)
    policy_spec = form.policy_spec()
    needs_model = live_runs.needs_shared_model(policy_spec, form.renderer)
    run, _ = reg.start(sid, policy_spec, lambda r: _work(r, sid, form), needs_model=needs_model, cancel=cancel)
    yield from follow(run)


def _work(run, sid: str, form: GenerateForm) -> None:
    """The run itself, on its worker thread: wait for a model slot if it needs one, plan, render, check."""
    policy_spec, renderer_spec = form.policy_spec(), form.renderer
    panel = EventPanel()
    # Clear the previous run's results at once, so nothing stale sits beside the new stream.
    run.set(status=f"● Starting `{esc(policy_spec)}` …", events=panel.html(), gallery=[], program=program_html(None),
            image=None, verify=verification_html(None), downloads=None)
    early = _early_warnings(policy_spec)
    for w in early:
        panel.add(WarningEvent(message=w))
    if early:
        run.set(events=panel.html())
    # Fail fast on a renderer that cannot work here (e.g. diffusers weights not on disk offline),
    # before minutes of planning are spent on a program nobody can draw.
    if renderer_spec != "none":
        try:
            preflight = getattr(_renderer(renderer_spec), "preflight", None)
            if preflight is not None:
                preflight(offline=form.offline or None)
        except Exception as exc:  # noqa: BLE001
            run.set(status=f"✗ Renderer `{esc(renderer_spec)}` cannot run here: {esc(_first_line(exc, bare=True))}")
            return
    queue = live_runs.registry().queue
    if run.needs_model:
        def on_wait(place: int, running: int) -> None:
            ahead = place - 1 + running
            run.set(status=f"⏳ Queued for the local model: position {place} in the queue · {ahead} run(s) ahead of "
                           f"yours · planner runs do not wait")

        if not queue.acquire(run.id, run.cancel, on_wait):
            run.set(status="■ cancelled while waiting in the queue (nothing ran)")
            return
    try:
        _plan_render_check(run, sid, form, panel, early)
    finally:
        if run.needs_model:
            queue.release(run.id)


def _early_warnings(policy_spec: str) -> list[str]:
    """Warnings due before the first round (e.g. nano without a trained adapter), not after it."""
    if _policy_kind(policy_spec) != "nano":
        return []
    from genevolve.policies.local import nano_base_warning

    w = nano_base_warning("given" if "adapter=" in policy_spec else None)
    return [w] if w else []


class _PageEvents:
    """The service's events as page updates: the live panel, the gallery, the program, the status line
    (thinking text is pushed at most every THINK_EVERY_S, so a fast policy cannot flood the socket)."""

    def __init__(self, run, panel: EventPanel, label: str, mode: str, renderer_spec: str, early: list[str]):
        self.run, self.panel, self.label, self.mode = run, panel, label, mode
        self.renderer_spec, self.early = renderer_spec, early
        self.started = False  # the agent was built: failures from here on are the run's, not its start's
        self.last_push = 0.0

    def __call__(self, event) -> None:
        run, panel = self.run, self.panel
        if event.type == "agent_ready":
            self.started = True
            return
        if event.type == "render_start":
            run.set(status=f"● Rendering with `{esc(self.renderer_spec)}` …")
            return
        if event.type == "warning" and event.message in self.early:
            return  # already shown before the first round
        panel.add(event)
        if event.type == "text_delta":
            now = time.perf_counter()
            if now - self.last_push < THINK_EVERY_S:
                return
            self.last_push = now
            live = event.stats
            if live.get("tokens_per_s"):  # a local model: say how fast it is going
                run.set(events=panel.html(), status=f"● Round {event.round} · {esc(self.label)} · {self.mode} · "
                                                    f"{live['tokens']} tokens · {live['tokens_per_s']:.1f} tok/s")
            else:
                run.set(events=panel.html())
            return
        self.last_push = time.perf_counter()
        if event.type == "round_start":
            run.set(status=f"● Round {event.round} · {esc(self.label)} · {self.mode}", events=panel.html())
        elif event.type == "tool_result" and event.images:
            run.set(events=panel.html(), gallery=_gallery(panel.images))
        elif event.type == "answer":
            images = {i.img_id: i.to_dict() for i in panel.images}
            run.set(events=panel.html(), program=program_html(event.program, images))
        else:
            run.set(events=panel.html())


def _plan_render_check(run, sid, form: GenerateForm, panel, early) -> None:
    policy_spec, renderer_spec = form.policy_spec(), form.renderer
    page = _PageEvents(run, panel, policy_spec, "offline" if form.offline else "online", renderer_spec, early)
    try:
        if run.needs_model:
            run.set(status=f"● Loading `{esc(policy_spec)}` …")
        settings = storage.settings()
        settings.runs_dir = str(sessions.session_dir(sid, "work"))
        result = service.generate(form, settings=settings, store=storage.store(), on_event=page, cancel=run.cancel,
                                  session=sid, policy=_policy(policy_spec),
                                  renderer=_renderer(renderer_spec) if renderer_spec != "none" else None,
                                  image_dir=lambda run_id: sessions.session_dir(sid, "runs", run_id))
    except Exception as exc:  # noqa: BLE001 - a missing model, key or module is a message, not a trace
        if page.started:
            run.set(status=f"✗ {esc(_first_line(exc))}", events=panel.html())
        else:  # the service words a failed start as bad input; the page names the original fault
            cause = exc.__cause__ if isinstance(exc, UserError) and exc.__cause__ is not None else exc
            run.set(status=f"✗ Could not start the agent: {esc(_first_line(cause))}", events=panel.html())
        return

    traj = result.trajectory
    if result.image_path is not None or result.render_failure is not None:
        err = None
        if result.render_failure is not None:
            err = ("renderers are not available in this build" if isinstance(result.render_failure, ModuleNotFoundError)
                   else f"render failed: {_first_line(result.render_failure)}")
            panel.add(WarningEvent(message=err))
        else:
            icon, severity = verification_mark(result.verification)
            panel.add_view(EventView(kind="verified", title="verified", icon=icon, severity=severity,
                                     meta=result.checked))
        files = _write_downloads(sid, traj, result.image_path, result.verification)
        status = (f"✓ {esc(traj.termination)} · {traj.elapsed_s:.2f}s · run `{traj.id}`" if not err
                  else f"⚠ program ready; {esc(err)}")
        run.set(status=status, events=panel.html(), image=result.image_path,
                verify=verification_html(result.verification or {"error": err}, result.render), downloads=files,
                history=history_rows(sid, None))
        return
    files = _write_downloads(sid, traj, None, None)
    word = "■ cancelled" if traj.termination == "cancelled" else f"{'✓' if traj.ok else '✗'} {esc(traj.termination)}"
    run.set(status=f"{word} · {traj.elapsed_s:.2f}s · run `{traj.id}`" + (f" · {esc(traj.reason)}" if traj.reason else ""),
            events=panel.html(), downloads=files, history=history_rows(sid, None))


def verification_mark(verification: dict | None) -> tuple[str, str]:
    """The verified card's icon and colour: green only when every asked text was found and
    nothing unasked was read; amber for near matches or stray words; red for missing text."""
    if not verification or verification.get("error"):
        return "?", "warn"
    results = verification.get("constraints") or []
    if any(r.get("status", "found" if r.get("found") else "missing") == "missing" for r in results):
        return "✗", "bad"
    if any(not r.get("found") for r in results) or verification.get("extra_text"):
        return "≈", "warn"
    return "✓", "good"


def _gallery(images) -> list[tuple[str, str]]:
    out = []
    for ref in images:
        if ref.path and Path(ref.path).is_file():
            out.append((ref.path, f"{ref.img_id} · {ref.title or ref.source}"[:60]))
    return out


def _first_line(exc: BaseException, bare: bool = False) -> str:
    from genevolve.errors import EnvironmentFault, UserError, explain

    if isinstance(exc, (UserError, EnvironmentFault, OSError, RecursionError)):
        return explain(exc)[1]  # the CLI's words for the same fault (a full disk, a broken store, bad input)
    msg = str(exc).strip().splitlines()
    first = msg[0] if msg else ""
    return first if bare and first else f"{type(exc).__name__}: {first}"
