"""Bench tab: browse a bench, open a case, send it to Generate, and read a finished run's summary.

Cases come from ``genevolve.bench.loaders.load_bench`` (``mini``, a GenEvolve-Bench jsonl or
directory, a WISE json). A bench run directory is read from its ``summary.json`` /
``summary.csv`` (written by ``genevolve bench run``), shown as tables and plotly charts.
"""

from __future__ import annotations

import csv
import json
from functools import lru_cache
from pathlib import Path

import gradio as gr

from app import markup, optional_parts, sessions, storage, upload_limits
from app.markup import esc

CASE_COLUMNS = ["id", "track", "category", "difficulty", "request"]


def build(sid_state, tabs=None, request_box=None, tab=None, uploads_box=None, form=None, upload_msg_box=None):
    if not optional_parts.available("genevolve.bench.loaders"):
        gr.HTML(optional_parts.missing_html("Benchmarks", "genevolve.bench"))
        return
    cases_state = gr.State([])
    with gr.Row():
        source = gr.Textbox("mini", label="Bench", scale=4, elem_id="be-source",
                            info="mini, a GenEvolve-Bench .jsonl or folder, or a WISE .json")
        load = gr.Button("Load", scale=1, elem_id="be-load")
    with gr.Row():
        track = gr.Dropdown(["any"], value="any", label="Track")
        category = gr.Dropdown(["any"], value="any", label="Category")
        difficulty = gr.Dropdown(["any"], value="any", label="Difficulty")
        search = gr.Textbox(label="Search", placeholder="words in the request", elem_id="be-search")
    load_error = gr.HTML("", elem_id="be-error")
    count = gr.Markdown("", elem_id="be-count")
    table = gr.Dataframe(headers=CASE_COLUMNS, value=[], interactive=False, wrap=True, max_height=280,
                         elem_id="be-table")
    current = gr.State(None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            case_html = gr.HTML("<div class='ge-empty'>Pick a case to see its request and images.</div>",
                                elem_id="be-case")
            run_case = gr.Button("Run this case in Generate →", variant="primary", elem_id="be-run")
        with gr.Column(scale=2):
            gt = gr.Image(label="Ground truth", type="filepath", interactive=False, height=260)
            refs = gr.Gallery(label="User reference images", columns=3, height=160, object_fit="contain",
                              allow_preview=False, elem_id="be-refs")
    with gr.Accordion("A finished bench run", open=True):
        with gr.Row():
            bench_limit = gr.Number(3, label="Cases", precision=0, minimum=1, scale=1)
            bench_run = gr.Button("Run this bench in the background (planner · layout · local judge)", scale=3,
                                  elem_id="be-bench-run")
            bench_msg = gr.Markdown("", elem_id="be-bench-msg")
        with gr.Row():
            run_dir = gr.Dropdown(_recent_run_dirs(), label="Run directory", allow_custom_value=True, scale=4,
                                  elem_id="be-rundir", info="a folder written by `genevolve bench run --out DIR`")
            open_run = gr.Button("Open", scale=1, elem_id="be-open")
        summary_msg = gr.Markdown("", elem_id="be-summary-msg")
        summary_table = gr.Dataframe(headers=["group", "n", "score"], value=[], interactive=False, wrap=True,
                                     elem_id="be-summary")
        summary_files = gr.File(label="Full report and CSV", file_count="multiple", interactive=False,
                                elem_id="be-summary-files")
        with gr.Row():
            chart_overall = gr.Plot(label="By category", elem_id="be-chart")
            chart_dims = gr.Plot(label="Dimensions", elem_id="be-dims")

    filters = [cases_state, track, category, difficulty, search]
    loaded = [cases_state, track, category, difficulty, load_error]
    load.click(load_cases, [source], loaded).then(filter_rows, filters, [table, count])
    source.submit(load_cases, [source], loaded).then(filter_rows, filters, [table, count])
    if tab is not None:  # the mini bench is there the first time the tab opens
        tab.select(lambda cases, src: load_cases(src) if not cases else (gr.skip(),) * 5, [cases_state, source],
                   loaded).then(filter_rows, filters, [table, count])
    for f in (track, category, difficulty):
        f.change(filter_rows, filters, [table, count])
    # Filter as the user types (the latest keystroke wins; no Enter needed).
    search.input(filter_rows, filters, [table, count], trigger_mode="always_last", show_progress="hidden")
    search.submit(filter_rows, filters, [table, count])
    table.select(show_case, [cases_state, sid_state], [current, case_html, gt, refs])
    bench_run.click(start_bench_run, [source, bench_limit], [bench_msg, run_dir])
    bench_timer = gr.Timer(2.0)
    bench_timer.tick(bench_job_status, [run_dir], [bench_msg, run_dir, summary_msg, summary_table, chart_overall,
                                                   chart_dims, summary_files], show_progress="hidden")
    open_run.click(read_run_dir, [run_dir], [summary_msg, summary_table, chart_overall, chart_dims, summary_files])
    if request_box is not None:
        outs = ([request_box] + ([uploads_box] if uploads_box is not None else [])
                + ([upload_msg_box] if upload_msg_box is not None else []) + ([tabs] if tabs is not None else []))

        def send(case, sid_value, request: gr.Request = None):
            """The case's request and its user reference images go to Generate (copied into the session)."""
            if not case:
                return (gr.skip(),) * len(outs)
            out = [case["question"]]
            if uploads_box is not None:
                refs = [p for p in case.get("images") or [] if isinstance(p, str) and Path(p).is_file()]
                kept, _ = upload_limits.copy_uploads(sessions.session_id(sid_value, request), refs)
                out.append(kept or None)
            if upload_msg_box is not None:
                out.append("")  # a refusal of an earlier upload does not speak of the case's images
            if tabs is not None:
                out.append(gr.Tabs(selected="generate"))
            return tuple(out)

        send_event = run_case.click(send, [current, sid_state], outs)
        if form:  # remember the new form, as typing and uploading would
            from app.generate_form import remember_form

            send_event = send_event.then(remember_form, list(form) + [sid_state], None, queue=False)
        # "Run this case" runs it: Generate is pressed once the form holds the case.
        send_event.then(None, None, None, js="(...a) => { const t = document.querySelector('#tab-generate'); "
                                             "if (t && t.offsetParent !== null && "
                                             "document.querySelector('#ge-request textarea').value) "
                                             "document.querySelector('#ge-go').click(); }")


def start_bench_run(source, limit):
    from app import jobs

    job_id, run_dir = jobs.start_bench((source or "mini").strip(), int(limit or 3))
    return (f"► bench job `{job_id}` running → `{run_dir}`",
            gr.update(choices=[str(run_dir)] + _recent_run_dirs(), value=str(run_dir)))


def bench_job_status(run_dir):
    """While a bench job of this folder runs, report it; when it ends, show its summary once."""
    skip7 = (gr.skip(),) * 7
    if not run_dir:
        return skip7
    job = next((j for j in storage.store().list_jobs(limit=20) if j["kind"] == "bench" and j["run_dir"] == run_dir), None)
    if job is None or job.get("message") == "shown":
        return skip7
    from app import jobs

    job = jobs.refresh(job)
    if job["status"] == "running":
        return (f"► bench job `{job['id']}` running… ({len(list(Path(run_dir).glob('**/*.png')))} images so far)",
                gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())
    storage.store().update_job(job["id"], message="shown")
    if job["status"] != "done":
        tail = jobs.log_tail(run_dir, 600)
        return (f"✗ bench job `{job['id']}` {job['status']}:\n```\n{tail}\n```",) + (gr.skip(),) * 6
    return (f"✓ bench job `{job['id']}` done", gr.skip()) + read_run_dir(run_dir)


def _track(case: dict) -> str:
    return str(case.get("track") or case.get("eval_type") or "")


def load_cases(source):
    from genevolve.bench.loaders import load_bench

    # A bench that cannot be loaded is an error above the table; the cases already there stay.
    keep = (gr.skip(),) * 4
    try:
        cases = load_bench((source or "mini").strip())
    except Exception as exc:  # noqa: BLE001 - a wrong path is a message
        return keep + (markup.error_html(f"✗ Could not load this bench: {exc}. The table still shows the "
                                         "bench loaded before."),)
    if not cases:
        return keep + (markup.error_html(
            f"✗ {source} holds no cases. A bench is mini, a GenEvolve-Bench .jsonl (one case per line with a "
            "question) or folder, or a WISE .json. The table still shows the bench loaded before."),)

    def opts(key):
        return ["any"] + sorted({str(c.get(key)) for c in cases if c.get(key) not in (None, "")})

    tracks = ["any"] + sorted({_track(c) for c in cases if _track(c)})
    return (cases, gr.update(choices=tracks, value="any"), gr.update(choices=opts("category"), value="any"),
            gr.update(choices=opts("difficulty"), value="any"), "")


def filter_rows(cases, track, category, difficulty, search):
    words = [w.lower() for w in (search or "").split()]
    rows = []
    for c in cases or []:
        if track not in (None, "any") and _track(c) != track:
            continue
        if category not in (None, "any") and str(c.get("category")) != category:
            continue
        if difficulty not in (None, "any") and str(c.get("difficulty")) != difficulty:
            continue
        if words and not all(w in c["question"].lower() for w in words):
            continue
        rows.append([c["id"], _track(c), c.get("category") or "", c.get("difficulty") or "", c["question"][:140]])
    return rows, f"{len(rows)} of {len(cases or [])} cases"


def show_case(cases, sid_value, evt: gr.SelectData, request: gr.Request = None):
    row = evt.row_value if evt is not None else None
    case = next((c for c in cases or [] if row and c["id"] == row[0]), None)
    if case is None:
        return None, "<div class='ge-empty'>Not found.</div>", None, []
    meta = " ".join(f"<span class='ge-chip'>{esc(k)}: {esc(case.get(k))}</span>"
                    for k in ("category", "difficulty", "eval_type") if case.get(k))
    sid = sessions.session_id(sid_value, request)
    past = [r for r in storage.store().list_runs(limit=500)
            if r["request"].strip() == case["question"].strip() and sessions.can_see(r, sid)]
    if past:
        items = "".join(f"<tr><td>{esc(r['id'])}</td><td>{esc(r.get('policy'))}</td><td>{esc(r.get('termination'))}</td>"
                        f"<td>{ {1: '✓ text found', 0: '✗ text not as asked'}.get(r.get('verified_ok'), '—') }</td></tr>"
                        for r in past[:10])
        past_html = (f"<table class='ge-table'><tr><th>run</th><th>policy</th><th>result</th><th>check</th></tr>"
                     f"{items}</table>")
    else:
        past_html = "<div class='ge-meta'>No past runs of this case in the store.</div>"
    html = (f"<div class='ge-case'><h3>{esc(case['id'])}</h3><div>{meta}</div>"
            f"<p class='ge-prompt'>{esc(case['question'])}</p><div class='ge-label'>past results</div>{past_html}</div>")
    gt = case.get("gt_image") if isinstance(case.get("gt_image"), str) and Path(case["gt_image"]).is_file() else None
    refs = [p for p in case.get("images") or [] if isinstance(p, str) and Path(p).is_file()]
    return case, html, gt, refs


@lru_cache(maxsize=1)
def _bench_root() -> Path:
    return storage.studio_home().parent / "bench"


def _recent_run_dirs() -> list[str]:
    """Bench run folders we can find: under $GENEVOLVE_HOME/bench and ./runs (newest first)."""
    found = []
    for root in (_bench_root(), Path("runs"), Path("bench_runs")):
        if root.is_dir():
            found += [p.parent for p in root.glob("**/summary.json")]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [str(p) for p in found[:30]]


DIMENSIONS = ("faithfulness", "visual_correctness", "text_accuracy", "aesthetics", "structure", "sufficiency",
              "constraint_coverage")
# The summary table's columns: the counts, then each measured score with its number of cases.
TABLE_COUNTS = ("group", "key", "cases", "scored", "failed")
SHORT = {"visual_correctness": "visual", "text_accuracy": "text", "constraint_coverage": "coverage",
         "overall_missing_zero": "overall (missing = 0)"}
COUNT_COLUMNS = {"cases", "scored", "failed", "missing"}


def read_run_dir(path):
    """Summary table and charts of one bench run directory (summary.json + summary.csv)."""
    import plotly.graph_objects as go

    empty = (gr.update(value=[]), None, None, None)
    d = Path((path or "").strip()).expanduser()
    if not d.is_dir():
        return (f"✗ Not a folder: `{esc(path)}`",) + empty
    rows, header = _summary_rows(d)
    if not rows:
        return (f"✗ No summary.csv or summary.json in `{esc(d)}` — run `genevolve bench summary {d}` first.",) + empty
    summary = {}
    if (d / "summary.json").is_file():
        summary = json.loads((d / "summary.json").read_text(encoding="utf-8"))
    overall = summary.get("overall")
    msg = (f"**{esc(d.name)}** · {summary.get('cases', len(rows))} cases · scored {summary.get('scored', '?')} · "
           f"overall **{'—' if overall is None else f'{overall:.3f}'}**")
    files = _published(d)
    # Charts by the most informative grouping: category, else track, else whatever the rows carry.
    by = summary.get("by") or {}
    group_key = next((k for k in ("category", "track", "eval_type", "difficulty") if by.get(k)), None)
    if group_key:
        groups = by[group_key]
        labels = list(groups)
        values = lambda m: [groups[k].get(m) for k in labels]  # noqa: E731
    else:
        labels = [str(r.get("key") or r.get(header[0])) for r in rows]
        values = lambda m: [_num(r.get(m)) for r in rows]  # noqa: E731
    fig1 = go.Figure(go.Bar(x=labels, y=values("overall"), marker_color="#6366f1", name="overall"))
    fig1.add_trace(go.Bar(x=labels, y=values("overall_missing_zero"), marker_color="#f59e0b",
                          name="overall (missing = 0)"))
    fig1.update_layout(title=f"overall by {group_key or 'group'}", height=320, barmode="group", template="plotly_white",
                       margin=dict(l=40, r=10, t=40, b=80), legend=dict(orientation="h", y=-0.3))
    fig2 = go.Figure()
    for m in DIMENSIONS:
        ys = values(m)
        if any(v is not None for v in ys):
            fig2.add_trace(go.Bar(name=m, x=labels, y=ys))
    if not fig2.data:
        fig2 = None
    else:
        fig2.update_layout(title="dimensions", barmode="group", height=320, template="plotly_white",
                           margin=dict(l=40, r=10, t=40, b=80), legend=dict(orientation="h", y=-0.3))
    table, columns, unmeasured = compact_table(rows, header)
    if unmeasured:
        msg += " · not measured: " + ", ".join(unmeasured)
    if files:
        msg += " · full report and every column in the files below"
    return msg, gr.update(value=table, headers=columns), fig1, fig2, files or None


def compact_table(rows: list[dict], header: list[str]) -> tuple[list[list], list[str], list[str]]:
    """The summary as a readable table: counts, then each measured score as "0.732 (36)" (score and
    the cases it covers). Scores no case measured are left out and named instead."""
    scores = [h for h in ("overall", "overall_missing_zero") + DIMENSIONS if h in header]
    measured = [h for h in scores if any(_num(r.get(h)) is not None for r in rows)]
    unmeasured = [SHORT.get(h, h) for h in scores if h not in measured]
    counts = [h for h in TABLE_COUNTS if h in header]
    if not scores:  # not a bench summary we know: show it as it is
        return [[_fmt(r.get(h)) for h in header] for r in rows], header, []
    table = []
    for r in rows:
        row = [_fmt(r.get(h)) for h in counts]
        for h in measured:
            v, n = _num(r.get(h)), r.get(f"{h}_n")
            row.append("—" if v is None else f"{v:.3f}" + (f" ({n})" if n not in (None, "") else ""))
        table.append(row)
    return table, counts + [SHORT.get(h, h) for h in measured], unmeasured


def _published(d: Path) -> list[str]:
    """report.html and summary.csv copied where the studio serves files from, as download links."""
    import hashlib
    import shutil

    wanted = [d / name for name in ("report.html", "summary.csv") if (d / name).is_file()]
    if not wanted:
        return []
    dest = storage.studio_home() / "bench-reports" / hashlib.sha1(str(d.resolve()).encode()).hexdigest()[:12]
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in wanted:
        shutil.copyfile(src, dest / src.name)
        out.append(str(dest / src.name))
    return out


def _fmt(v):
    n = _num(v)
    return v if n is None or float(n).is_integer() else f"{n:.3f}"


def _summary_rows(d: Path) -> tuple[list[dict], list[str]]:
    csv_path = d / "summary.csv"
    if csv_path.is_file():
        with open(csv_path, encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return rows, list(reader.fieldnames or [])
    js = d / "summary.json"
    if js.is_file():
        data = json.loads(js.read_text(encoding="utf-8"))
        rows = _flatten_summary(data)
        header = list(dict.fromkeys(k for r in rows for k in r))
        return rows, header
    return [], []


def _flatten_summary(data) -> list[dict]:
    """Accept a list of rows, {"groups": [...]}, or {group: {metric: value}}."""
    if isinstance(data, list):
        return [r for r in data if isinstance(r, dict)]
    if isinstance(data, dict):
        for key in ("rows", "groups", "by_category", "categories"):
            if isinstance(data.get(key), list):
                return [r for r in data[key] if isinstance(r, dict)]
        rows = []
        for k, v in data.items():
            if isinstance(v, dict) and any(isinstance(x, (int, float)) for x in v.values()):
                rows.append({"group": k, **{m: x for m, x in v.items() if isinstance(x, (int, float, str))}})
        if rows:
            return rows
        flat = {k: v for k, v in data.items() if isinstance(v, (int, float, str))}
        return [{"group": "all", **flat}] if flat else []
    return []


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
