"""Judge tab: score one image (uploaded or from this session's runs) with any judge spec.

The local OCR verifier needs no key; a VLM judge without its key answers with a clear
message (the judges return ``status="failed"`` with the reason instead of raising).
"""

from __future__ import annotations

import gradio as gr

from app import markup, optional_parts, sessions, storage
from app.markup import esc

JUDGE_CHOICES = ["local", "kscore:gpt-4o@https://api.openai.com/v1", "wise:gpt-4o@https://api.openai.com/v1"]
DIMENSION_LABELS = [("faithfulness", "faithfulness"), ("visual_correctness", "visual"),
                    ("text_accuracy", "text"), ("aesthetics", "aesthetics"), ("overall", "KScore")]


def build(sid_state):
    if not optional_parts.available("genevolve.judges") or not _has_make_judge():
        gr.HTML(optional_parts.missing_html("Judging", "genevolve.judges.make_judge"))
        return
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            with gr.Row():
                pick = gr.Dropdown([], label="Pick one of your runs", info="or upload an image below",
                                   elem_id="ju-pick", allow_custom_value=False)
                reload = gr.Button("↻", size="sm", scale=0, min_width=40)
            with gr.Row():
                image = gr.Image(label="Generated image (Image 1)", type="filepath", height=260, elem_id="ju-image")
                gt = gr.Image(label="Ground truth (Image 2, optional)", type="filepath", height=260)
            question = gr.Textbox(label="Request", lines=2, elem_id="ju-question",
                                  placeholder='A poster with the title "OPEN LATE"')
            run_state = gr.State(None)  # the picked run's id: its program and trajectory go to the judge
            with gr.Row():
                spec = gr.Dropdown(JUDGE_CHOICES, value="local", label="Judge", allow_custom_value=True,
                                   elem_id="ju-spec", info="local = OCR verifier, no key")
                go = gr.Button("Score", variant="primary", elem_id="ju-go")
        with gr.Column(scale=4):
            card = gr.HTML(_scorecard(None), elem_id="ju-card")
            rationale = gr.Markdown("", elem_id="ju-rationale")
            with gr.Accordion("Raw verdict", open=False):
                raw = gr.JSON(label="scores")
    reload.click(_run_choices, [sid_state], [pick])
    pick.focus(_run_choices, [sid_state], [pick])
    pick.change(_load_run, [pick, sid_state], [image, question, run_state])
    image.upload(lambda: None, None, [run_state])  # an uploaded image is judged against the request alone
    go.click(score, [image, gt, question, spec, run_state, sid_state], [card, rationale, raw], concurrency_id="model")


def _has_make_judge() -> bool:
    import genevolve.judges as judges

    return hasattr(judges, "make_judge")


def _run_choices(sid_value, request: gr.Request = None):
    sid = sessions.session_id(sid_value, request)
    runs = [r for r in storage.store().list_runs(session=sid, limit=50) if r.get("image_path")]
    return gr.update(choices=[(f"{r['id']} · {r['request'][:60]}", r["id"]) for r in runs])


def _load_run(run_id, sid_value, request: gr.Request = None):
    sid = sessions.session_id(sid_value, request)
    run = storage.store().get_run(run_id) if run_id else None
    if not run or run.get("session") != sid:
        return gr.skip(), gr.skip(), None
    return run.get("image_path"), run["request"], run["id"]


def score(image_path, gt_path, question, spec, run_id=None, sid_value=None, request: gr.Request = None):
    if not image_path:
        return markup.error_html("Upload an image or pick one of your runs first."), "", None
    from genevolve.judges import make_judge
    from genevolve.program import Program

    question = (question or "").strip()
    try:
        judge = make_judge((spec or "local").strip())
    except Exception as exc:  # noqa: BLE001 - e.g. a missing API key: say so, plainly
        return markup.error_html(f"Cannot use judge '{spec}': {exc}"), "", None
    run = storage.store().get_run(run_id) if run_id else None
    if run is not None and run.get("session") != sessions.session_id(sid_value, request):
        run = None  # never another session's run
    trajectory = None
    if run is not None and run.get("program"):
        from genevolve.trajectory import Trajectory

        program = Program.model_validate(run["program"])
        trajectory = Trajectory.from_dict(run["trajectory"])
    else:
        # No program: the judge checks the image against the request itself and says that the
        # program dimensions (coverage, sufficiency) were not measured.
        program = None
    case = {"id": "studio", "question": question, "gt_image": gt_path, "eval_type": "text_and_image" if gt_path else "text",
            "category": "studio", "difficulty": ""}
    result = judge.score(case, image_path, program, trajectory)
    data = result.model_dump() if hasattr(result, "model_dump") else dict(result)
    if data.get("status") == "failed":
        return markup.error_html(f"The judge could not score this image: {data.get('error')}"), "", data
    return _scorecard(data), "**Rationale** — " + (data.get("rationale") or "_none given_"), data


def _scorecard(data: dict | None) -> str:
    if not data:
        return "<div class='ge-empty'>Scores appear here: four dimensions and the overall KScore.</div>"
    cells = []
    kscore = str(data.get("judge") or "").startswith("kscore")
    for key, label in DIMENSION_LABELS:
        if key == "overall" and not kscore:
            label = "overall"
        v = data.get(key)
        cells.append(f"<div data-dim='{key}'><b>{'—' if v is None else f'{v:.2f}'}</b><span>{label}</span></div>")
    extra = ""
    details = data.get("details") or {}
    if isinstance(details, dict) and details.get("constraints"):
        rows = "".join(f"<li>{'✓' if c.get('found') else '✗'} “{esc(c.get('text'))}”</li>" for c in details["constraints"])
        extra = f"<ul class='ge-meta'>{rows}</ul>"
    return (f"<div class='ge-scorecard'>{''.join(cells)}</div><div class='ge-meta'>judge {esc(data.get('judge'))} · "
            f"{data.get('elapsed_s', 0):.2f}s</div>{extra}")


