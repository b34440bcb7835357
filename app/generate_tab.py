"""Generate tab: request + references + backends in, a live trajectory, a program, an image and its check out.

The handler is a generator: every agent event is pushed to the page the moment it happens
(thinking text is batched to ~12 updates a second so a fast policy cannot flood the socket).
Stop sets the session's cancel flag; the agent checks it between tokens and rounds and ends
the trajectory as ``cancelled``, which is then saved like any other run.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import gradio as gr

from app import common
from app.common import esc
from app.trajectory_view import EventPanel, program_html, verification_html

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


def compose_policy_spec(base: str, four_bit: bool, adapter: str | None) -> str:
    """The policy spec with the 4-bit and adapter options (only local models take them)."""
    base = (base or "planner").strip()
    if not base.split(":", 1)[0] in ("hf", "nano"):
        return base
    params = []
    if four_bit and "4bit=" not in base:
        params.append("4bit=1")
    if adapter and adapter.strip() and "adapter=" not in base:
        params.append(f"adapter={adapter.strip()}")
    if not params:
        return base
    return base + ("&" if "?" in base else "?") + "&".join(params)


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


# ---------------------------------------------------------------- UI


def build(sid_state, tabs=None):
    with gr.Row(equal_height=False, elem_id="ge-generate"):
        with gr.Column(scale=5, min_width=380):
            request = gr.Textbox(label="Request", lines=3, elem_id="ge-request", placeholder=EXAMPLES[0])
            gr.Examples(EXAMPLES, inputs=[request], label="Try")
            uploads = gr.File(label="Your reference images (optional)", file_count="multiple",
                              file_types=["image"], elem_id="ge-uploads", height=120)
            with gr.Accordion("Backends", open=False, elem_id="ge-backends"):
                with gr.Row():
                    policy = gr.Dropdown(POLICY_CHOICES, value="planner", label="Policy", allow_custom_value=True,
                                         elem_id="ge-policy", info="planner runs offline with no model")
                    renderer = gr.Dropdown(RENDERER_CHOICES, value="layout", label="Renderer", allow_custom_value=True,
                                           elem_id="ge-renderer", info="layout draws offline on the CPU")
                with gr.Row():
                    four_bit = gr.Checkbox(False, label="4-bit (local models)")
                    adapter = gr.Textbox(label="LoRA adapter path (local models)", placeholder="runs/sft/checkpoint-final")
                with gr.Row():
                    typeset = gr.Checkbox(False, label="Typeset exact text onto the image")
                    offline = gr.Checkbox(True, label="Offline (local corpus and image library)", elem_id="ge-offline")
                    seed = gr.Number(0, label="Seed", precision=0, minimum=0)
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
                                        elem_id="ge-downloads", height=170)
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

    outputs = [status, events, gallery, program, image, verify, downloads, history]
    run_event = go.click(
        common.gpu(run_generate),
        inputs=[request, uploads, policy, four_bit, adapter, renderer, typeset, offline, seed, sid_state],
        # Progress (incl. the queue position when other sessions' runs hold the slots) shows on the status line only.
        outputs=outputs, show_progress="minimal", show_progress_on=[status], concurrency_id="model",
        api_name="generate",
    )
    request.submit(lambda: None, None, None, js="() => document.querySelector('#ge-go').click()")
    stop.click(stop_run, inputs=[sid_state], outputs=[status], queue=False)
    refresh.click(history_rows, inputs=[sid_state], outputs=[history])
    history.select(load_run, inputs=[sid_state], outputs=[status, events, program, image, verify, downloads])
    return {"request": request, "history": history, "run_event": run_event}


# ---------------------------------------------------------------- handlers


def stop_run(sid_value, request: gr.Request = None):
    sid = common.session_id(sid_value, request)
    common.cancel_event(sid).set()
    return gr.update(value="■ Stopping… the current step finishes, then the run ends as *cancelled*.")


def history_rows(sid_value, request: gr.Request = None) -> list[list]:
    sid = common.session_id(sid_value, request)
    rows = []
    for r in common.store().list_runs(session=sid, limit=50):
        check = {1: "all text found", 0: "text missing"}.get(r.get("verified_ok"), "—")
        rows.append([r["id"], time.strftime("%H:%M:%S", time.localtime(r["created_at"])), r["request"][:90],
                     r.get("termination") or "", check])
    return rows


def load_run(sid_value, evt: gr.SelectData, request: gr.Request = None):
    """Open one of this session's past runs (never another session's)."""
    sid = common.session_id(sid_value, request)
    row = evt.row_value if evt is not None and getattr(evt, "row_value", None) else None
    run = common.store().get_run(row[0]) if row else None
    if run is None or run.get("session") != sid:
        return ("Run not found in this session.",) + (None,) * 5
    from genevolve.trajectory import Trajectory
    from app.trajectory_view import timeline_html

    traj = Trajectory.from_dict(run["trajectory"])
    files = _write_downloads(sid, traj, run.get("image_path"), run.get("verification"))
    return (f"Loaded run `{traj.id}` · {traj.termination}", timeline_html(traj),
            program_html(traj.program, {i.img_id: i.to_dict() for i in traj.images}),
            run.get("image_path"), verification_html(run.get("verification"), run.get("render")), files)


def _write_downloads(sid: str, traj, image_path: str | None, verification: dict | None) -> list[str]:
    out = common.session_dir(sid, "runs", traj.id)
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


def _copy_uploads(sid: str, uploads) -> list[str]:
    paths = []
    if not uploads:
        return paths
    dest = common.session_dir(sid, "uploads")
    for item in uploads:
        src = Path(getattr(item, "name", item))
        if src.is_file():
            target = dest / src.name
            shutil.copyfile(src, target)
            paths.append(str(target))
    return paths


def run_generate(request_text, uploads, policy_base, four_bit, adapter, renderer_spec, typeset, offline, seed,
                 sid_value, request: gr.Request = None):
    """Stream one run into the page: (status, events, gallery, program, image, verify, downloads, history)."""

    skip = gr.skip()
    sid = common.session_id(sid_value, request)
    cancel = common.cancel_event(sid, fresh=True)
    panel = EventPanel()
    text = (request_text or "").strip()
    if not text:
        yield ("Write a request first.", skip, skip, skip, skip, skip, skip, skip)
        return
    policy_spec = compose_policy_spec(policy_base, bool(four_bit), adapter)
    renderer_spec = (renderer_spec or "layout").strip()
    # Clear the previous run's results at once, so nothing stale sits beside the new stream.
    yield (f"● Starting `{esc(policy_spec)}` …", panel.html(), [], program_html(None), None,
           verification_html(None), None, skip)
    try:
        from genevolve.agent import build_agent

        settings = common.settings()
        settings.policy, settings.renderer = policy_spec, renderer_spec
        settings.runs_dir = str(common.session_dir(sid, "work"))
        agent = build_agent(settings, store=common.store(), policy=_policy(policy_spec), offline=bool(offline))
    except Exception as exc:  # noqa: BLE001 - a missing model, key or module is a message, not a trace
        yield (f"✗ Could not start the agent: {esc(_first_line(exc))}", panel.html(), skip, skip, skip, skip, skip, skip)
        return

    traj = None
    last_push = 0.0
    mode = "offline" if offline else "online"
    for event in agent.stream(text, _copy_uploads(sid, uploads), cancel=cancel, session=sid):
        panel.add(event)
        if event.type == "text_delta":
            now = time.perf_counter()
            if now - last_push < THINK_EVERY_S:
                continue
            last_push = now
            yield (skip, panel.html(), skip, skip, skip, skip, skip, skip)
            continue
        last_push = time.perf_counter()
        if event.type == "round_start":
            yield (f"● Round {event.round} · {esc(policy_spec)} · {mode}", panel.html(), skip, skip, skip, skip, skip,
                   skip)
        elif event.type == "tool_result" and event.images:
            yield (skip, panel.html(), _gallery(panel.images), skip, skip, skip, skip, skip)
        elif event.type == "answer":
            images = {i.img_id: i.to_dict() for i in panel.images}
            yield (skip, panel.html(), skip, program_html(event.program, images), skip, skip, skip, skip)
        elif event.type == "done":
            traj = event.trajectory
            yield (skip, panel.html(), skip, skip, skip, skip, skip, skip)
        else:
            yield (skip, panel.html(), skip, skip, skip, skip, skip, skip)

    if traj is None:
        return
    image_path = verification = None
    if traj.program is not None and renderer_spec != "none" and not cancel.is_set():
        yield (f"● Rendering with `{esc(renderer_spec)}` …", skip, skip, skip, skip, skip, skip, skip)
        image_path, render, verification, err = _render_and_verify(sid, traj, renderer_spec, bool(typeset), int(seed or 0))
        if err:
            panel.note("warning", f"<div class='ge-warn'>⚠ {esc(err)}</div>")
        else:
            from genevolve.judges.structure import verification_summary

            panel.note("verified", f"<div class='ge-head'>✓ verified</div><div class='ge-meta'>"
                                   f"{esc(verification_summary(verification, render, traj.program.constraints))}</div>")
        files = _write_downloads(sid, traj, image_path, verification)
        status = (f"✓ {esc(traj.termination)} · {traj.elapsed_s:.2f}s · run `{traj.id}`" if not err
                  else f"⚠ program ready, render failed: {esc(err)}")
        yield (status, panel.html(), skip, skip, image_path, verification_html(verification or {"error": err}, render),
               files, history_rows(sid, None))
        return
    files = _write_downloads(sid, traj, None, None)
    word = "■ cancelled" if traj.termination == "cancelled" else f"{'✓' if traj.ok else '✗'} {esc(traj.termination)}"
    yield (f"{word} · {traj.elapsed_s:.2f}s · run `{traj.id}`" + (f" · {esc(traj.reason)}" if traj.reason else ""),
           panel.html(), skip, skip, skip, skip, files, history_rows(sid, None))


def _render_and_verify(sid, traj, spec, typeset, seed):
    """Render the program and OCR-check it; returns (image path, render report, verification, error)."""
    if not common.available("genevolve.renderers") or not _has_attr("genevolve.renderers", "make_renderer"):
        return None, None, None, "renderers are not available in this build"
    try:
        from genevolve.renderers import render_with_report

        image, report = render_with_report(_renderer(spec), traj.program, seed=seed, typeset=typeset)
    except Exception as exc:  # noqa: BLE001
        return None, None, None, f"render failed: {_first_line(exc)}"
    path = common.session_dir(sid, "runs", traj.id) / "image.png"
    image.save(path)
    verification = None
    try:
        from genevolve.judges.verify import verify_image

        verification = verify_image(image, traj.program)
    except Exception as exc:  # noqa: BLE001 - an image without a check is still an image
        verification = {"error": f"verification unavailable: {_first_line(exc)}", "constraints": []}
    try:
        common.store().attach_render(traj.id, str(path), report, verification if "error" not in verification else None)
    except Exception:  # noqa: BLE001
        pass
    return str(path), report, verification, None


def _gallery(images) -> list[tuple[str, str]]:
    out = []
    for ref in images:
        if ref.path and Path(ref.path).is_file():
            out.append((ref.path, f"{ref.img_id} · {ref.title or ref.source}"[:60]))
    return out


def _has_attr(module: str, name: str) -> bool:
    import importlib

    return hasattr(importlib.import_module(module), name)


def _first_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}"
