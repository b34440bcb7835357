"""Inspector tab for annotators: filter stored trajectories, read one as a timeline, audit, export.

Every trajectory in the store is listed — studio runs, CLI runs, and bench and data-build runs
(imported from their folders by ``app.run_index``) — with a filter by source. Audits are per
step or for the whole trajectory (accept / reject / needs fix + comment; a step's fix is the
replacement turn) and go to the store's audits table. "Export accepted" honours them through
``Store.export_sft_report``: a step marked needs-fix goes out with its fix, or keeps the
trajectory out, and the message says which; a fix that changes a tool call ends the record at the
fix (the stored tool response answered the old call). The download is one zip: the records and
the images they point to.
"""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from app import markup, sessions, storage
from app.markup import esc
from app.trajectory_view import timeline_html

COLUMNS = ["run", "when", "source", "request", "policy", "termination", "errors", "verified", "audit"]
SOURCES = [("any", "any"), ("studio (browsers)", "studio"), ("command line", "cli"), ("bench runs", "bench"),
           ("data builds", "data")]
VERDICTS = [("accept", "accept"), ("reject", "reject"), ("needs fix", "needs_fix")]
TRI = ["any", "yes", "no"]


def build(sid_state, tab=None):
    with gr.Row():
        source = gr.Dropdown(SOURCES, value="any", label="Source", scale=2, elem_id="in-source")
        backend = gr.Dropdown(["any"], value="any", label="Backend (policy)", allow_custom_value=True, scale=2)
        termination = gr.Dropdown(["any", "answer", "forced_answer", "max_rounds", "format_error", "policy_error",
                                   "cancelled", "max_rounds_reached", "no_answer", "error"],  # last 3: official runs
                                  value="any", label="Termination", scale=2)
        has_errors = gr.Dropdown(TRI, value="any", label="Has errors", scale=1)
        failed = gr.Dropdown(TRI, value="any", label="Verification failed", scale=1)
        audited = gr.Dropdown(TRI, value="any", label="Audited", scale=1)
        mine = gr.Checkbox(False, label="Only my runs", scale=1, min_width=100)
        refresh = gr.Button("Refresh", elem_id="in-refresh", scale=1)
    with gr.Row():
        folder = gr.Textbox(label="Import a bench run or data-build folder", scale=4, elem_id="in-folder",
                            placeholder="a folder written by `genevolve bench run --out` or `genevolve data build --out`")
        import_btn = gr.Button("Import", scale=1, elem_id="in-import")
    import_msg = gr.Markdown("", elem_id="in-import-msg")
    # Short columns get room for their header: without widths, "errors" and "verified" wrapped a
    # letter per line while the request took the rest.
    table = gr.Dataframe(headers=COLUMNS, value=[], interactive=False, wrap=True, elem_id="in-table", max_height=260,
                         column_widths=["9%", "8%", "7%", "34%", "8%", "10%", "7%", "8%", "9%"])
    current = gr.State(None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            timeline = gr.HTML("<div class='ge-empty'>Pick a trajectory above to open its timeline.</div>",
                               elem_id="in-timeline")
        with gr.Column(scale=2):
            info = gr.Markdown("", elem_id="in-info")
            step = gr.Dropdown(["whole trajectory"], value="whole trajectory", label="Audit target", elem_id="in-step")
            verdict = gr.Radio(VERDICTS, value="accept", label="Verdict", elem_id="in-verdict")
            comment = gr.Textbox(label="Comment", lines=2, elem_id="in-comment")
            fix = gr.Textbox(label="Fix (needs fix on a step: the corrected turn, exported in its place)", lines=4,
                             elem_id="in-fix", placeholder="<think>…</think><tool_call>{…}</tool_call> or <answer>{…}</answer>")
            save = gr.Button("Save audit", variant="primary", elem_id="in-save")
            audit_log = gr.HTML("", elem_id="in-audits")
            gr.Markdown("---")
            export = gr.Button("Export accepted as SFT", elem_id="in-export")
            export_file = gr.File(label="SFT records and images (zip)", interactive=False, elem_id="in-export-file")
            export_msg = gr.Markdown("", elem_id="in-export-msg")

    filters = [backend, termination, has_errors, failed, audited, mine, sid_state, source]
    refresh.click(list_rows, filters, [table, backend])
    if tab is not None:
        tab.select(list_rows, filters, [table, backend])
    for f in (termination, has_errors, failed, audited, mine, source):
        f.change(list_rows, filters, [table, backend])
    import_btn.click(import_folder, [folder], [import_msg]).then(list_rows, filters, [table, backend])
    table.select(open_run, [sid_state], [current, timeline, info, step, audit_log])
    save.click(save_audit, [current, step, verdict, comment, fix], [timeline, audit_log, comment, fix]).then(
        list_rows, filters, [table, backend])
    export.click(export_sft, [sid_state], [export_file, export_msg])


def _tri(v: str):
    return None if v == "any" else v == "yes"


def import_folder(folder):
    from app import run_index

    if not (folder or "").strip():
        return "✗ Name a folder first."
    try:
        kind, n = run_index.import_folder(folder, force=True)
    except ValueError as exc:
        return f"✗ {esc(exc)}"
    return f"✓ imported {n} trajectories from a {kind} folder"


def list_rows(backend, termination, has_errors, failed, audited, mine, sid_value, source="any",
              request: gr.Request = None):
    """Stored trajectories this browser may see: its own, and those no browser owns (CLI, bench, data)."""
    from app import run_index

    run_index.import_known()  # bench and data-build folders written since the last look
    st = storage.store()
    sid = sessions.session_id(sid_value, request)
    runs = st.list_runs(session=sid if mine else None, source=None if source in (None, "", "any") else source,
                        policy=None if backend in (None, "", "any") else backend,
                        termination=None if termination in (None, "", "any") else termination,
                        has_errors=_tri(has_errors), verification_failed=_tri(failed), audited=_tri(audited),
                        limit=300)
    rows = []
    for r in (r for r in runs if sessions.can_see(r, sid)):
        verified = {1: "ok", 0: "failed"}.get(r.get("verified_ok"), "—")
        rows.append([r["id"], time.strftime("%m-%d %H:%M", time.localtime(r["created_at"])), r.get("source") or "",
                     r["request"][:80],
                     r.get("policy") or "", r.get("termination") or "", "yes" if r.get("has_errors") else "",
                     verified, st.latest_verdict(r["id"]) or ""])
    policies = sorted({r.get("policy") for r in st.list_runs(limit=500) if r.get("policy") and sessions.can_see(r, sid)})
    return rows, gr.update(choices=["any", *policies])


def open_run(sid_value, evt: gr.SelectData, request: gr.Request = None):
    row = evt.row_value if evt is not None else None
    st = storage.store()
    run = st.get_run(row[0]) if row else None
    if run is not None and not sessions.can_see(run, sessions.session_id(sid_value, request)):
        run = None
    traj = st.get_trajectory(run["id"]) if run else None
    if traj is None:
        return None, "<div class='ge-empty'>Not found.</div>", "", gr.update(), ""
    audits = st.audits(traj.id)
    steps = ["whole trajectory"] + [f"step {s.round} · {s.kind}{' · ' + s.tool_name if s.tool_name else ''}"
                                    for s in traj.steps]
    ver = run.get("verification") or {}
    score = ver.get("text_score")
    info = (f"**{traj.id}** · {traj.termination} · {len(traj.steps)} rounds · {traj.elapsed_s:.2f}s  \n"
            f"policy `{traj.backends.get('policy', '?')}` · text check "
            + ("—" if score is None else f"{score:.2f}"))
    return traj.id, timeline_html(traj, audits, image_path=run.get("image_path")), info, \
        gr.update(choices=steps, value="whole trajectory"), _audits_html(audits)


def save_audit(run_id, target, verdict, comment, fix=""):
    skip = gr.skip()
    if not run_id:
        return skip, markup.error_html("Open a trajectory first."), skip, skip
    step = None
    if target and target.startswith("step "):
        step = int(target.split()[1])
    fix = (fix or "").strip()
    if fix and (verdict != "needs_fix" or step is None):
        return skip, markup.error_html("A fix replaces one step's turn: pick that step and the verdict *needs fix*."), \
            skip, skip
    if fix:
        problem = _fix_problem(fix)
        if problem:
            return skip, markup.error_html(f"This fix is not a turn the policy could have written: {problem}. "
                                           "Write <think>…</think> then one <tool_call>{…}</tool_call> or "
                                           "<answer>{…}</answer>."), skip, skip
    st = storage.store()
    st.add_audit(run_id, verdict, (comment or "").strip(), step=step, annotator="studio", fix=fix or None)
    traj = st.get_trajectory(run_id)
    audits = st.audits(run_id)
    run = st.get_run(run_id) or {}
    return timeline_html(traj, audits, image_path=run.get("image_path")), _audits_html(audits), "", ""


def _fix_problem(text: str) -> str | None:
    """Why a fix cannot stand as an assistant turn (None when it parses as one)."""
    from genevolve.protocol import parse_turn

    turn = parse_turn(text)
    error = getattr(turn, "error", None)
    if error:
        return str(error)
    return None


def _audits_html(audits: list[dict]) -> str:
    if not audits:
        return "<div class='ge-meta'>No audits yet.</div>"
    items = "".join(f"<li><span class='ge-verdict ge-v-{esc(a['verdict'])}'>{esc(a['verdict'])}</span>"
                    f"{'whole' if a.get('step') is None else 'step ' + str(a['step'])} "
                    f"<span class='ge-meta'>{esc(a.get('comment') or '')}{' · with a fix' if a.get('fix') else ''}"
                    f"</span></li>" for a in audits)
    return f"<ul class='ge-audits'>{items}</ul>"


def export_sft(sid_value, request: gr.Request = None):
    sid = sessions.session_id(sid_value, request)
    out = sessions.session_dir(sid, "exports", time.strftime("sft-%Y%m%d-%H%M%S"))
    st = storage.store()
    visible = [r["id"] for r in st.list_runs(limit=100_000) if sessions.can_see(r, sid)]
    report = st.export_sft_report(out, accepted_only=True, ids=list(reversed(visible)))
    n = report["exported"]
    notes = []
    if report["fixed"]:
        notes.append(f"⚠ {len(report['fixed'])} exported with the annotator's fix in place of a *needs fix* step "
                     f"({', '.join(report['fixed'][:5])})")
    for run_id, why in list(report.get("cut", {}).items())[:5]:
        notes.append(f"✂ {run_id}: {why}; the tool was not re-run")
    if report["excluded"]:
        listed = "; ".join(f"{k}: {v}" for k, v in list(report["excluded"].items())[:5])
        notes.append(f"⚠ {len(report['excluded'])} accepted trajectories left out ({listed}) — give each "
                     "needs-fix step a fix, or re-audit it")
    tail = ("  \n" + "  \n".join(notes)) if notes else ""
    if n == 0:
        return None, "No trajectories to export — mark some as *accept* first." + tail
    archive = sft_archive(Path(report["path"]).parent)
    n_images = sum(1 for _ in (Path(report["path"]).parent / "images").glob("*"))
    return str(archive), (f"Exported **{n}** accepted trajectories: `{archive.name}` holds sft.jsonl and the "
                          f"{n_images} image{'' if n_images == 1 else 's'} its records point to (images/…)." + tail)


def sft_archive(folder: Path) -> Path:
    """One zip with sft.jsonl and its images/ folder: the records' image paths resolve inside it."""
    import zipfile

    archive = folder / f"{folder.name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(folder / "sft.jsonl", "sft.jsonl")
        for img in sorted((folder / "images").glob("*")) if (folder / "images").is_dir() else []:
            z.write(img, f"images/{img.name}")
    return archive
