"""Training tab: start SFT or GRPO(+SDL) as a background job, watch its curves and logs, stop/resume.

Jobs are subprocesses (``genevolve train sft|grpo --config FILE``) tracked in the store's jobs
table (see app/jobs.py), so reloading the page, or opening it in another browser, finds them
still running. A timer polls the selected job's ``metrics.jsonl`` every two seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from app import jobs, optional_parts, storage
from app.markup import esc

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
JOB_COLUMNS = ["job", "kind", "config", "status", "started", "updated"]
POLL_S = 2.0
# Lines per chart: the eight skills, or the tool calls, three tools and three picture counters,
# fit; more would be unreadable.
MAX_SERIES = 10


def available() -> bool:
    return optional_parts.available("genevolve.training.commands")


def config_choices(kind: str) -> list[str]:
    if not CONFIG_DIR.is_dir():
        return []
    files = sorted(p for p in CONFIG_DIR.glob("**/*") if p.suffix in (".yaml", ".yml", ".json"))
    key = "sft" if kind == "sft" else "grpo"
    # Tiny configs first: they run on this CPU in about a minute.
    files.sort(key=lambda p: ("tiny" not in p.name, p.name))
    preferred = [str(p.relative_to(CONFIG_DIR.parent)) for p in files if key in p.name.lower()]
    return preferred or [str(p.relative_to(CONFIG_DIR.parent)) for p in files]


def build(sid_state, tab=None):
    if not available():
        gr.HTML(optional_parts.missing_html("Training", "genevolve.training.commands"))
        return
    current = gr.State(None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            kind = gr.Radio([("SFT", "sft"), ("GRPO + SDL", "grpo")], value="sft", label="Stage", elem_id="tr-kind")
            config = gr.Dropdown(config_choices("sft"), value=(config_choices("sft") or [None])[0], label="Config",
                                 allow_custom_value=True, elem_id="tr-config",
                                 info="configs/ ships CPU configs with a tiny model")
            max_steps = gr.Number(0, label="Max steps", precision=0, minimum=0, elem_id="tr-max-steps",
                                  info="0 = as in the config")
            preview = gr.Code(read_config((config_choices("sft") or [""])[0]), language="yaml", label="Config", lines=10, max_lines=18, interactive=False)
            start = gr.Button("Start job", variant="primary", elem_id="tr-start")
            msg = gr.Markdown("", elem_id="tr-msg")
        with gr.Column(scale=5):
            with gr.Row():
                jobs_table = gr.Dataframe(headers=JOB_COLUMNS, value=[], interactive=False, max_height=200,
                                          elem_id="tr-jobs", scale=5)
            with gr.Row():
                status = gr.Markdown("Select a job.", elem_id="tr-status")
                stop = gr.Button("Stop", variant="stop", size="sm", elem_id="tr-stop", scale=0, min_width=80)
                resume = gr.Button("Resume", size="sm", elem_id="tr-resume", scale=0, min_width=80)
            with gr.Row():
                loss_plot = gr.Plot(label="Loss", elem_id="tr-loss")
                reward_plot = gr.Plot(label="Reward and components", elem_id="tr-reward")
            with gr.Row():
                tools_plot = gr.Plot(label="Tool calls and pictures bound", elem_id="tr-tools")
                skills_plot = gr.Plot(label="Skills read", elem_id="tr-skills")
            with gr.Row():
                kl_plot = gr.Plot(label="SDL KL", elem_id="tr-kl")
            log = gr.Textbox(label="Log", lines=10, max_lines=14, autoscroll=True, interactive=False, elem_id="ge-log")
    timer = gr.Timer(POLL_S)
    # What ``watch`` fills: the status, one plot per entry of CHARTS in its order, the log.
    views = [status, loss_plot, reward_plot, kl_plot, tools_plot, skills_plot, log]

    kind.change(lambda k: gr.update(choices=config_choices(k), value=(config_choices(k) or [None])[0]), [kind], [config])
    config.change(read_config, [config], [preview])
    start.click(start_job, [kind, config, max_steps], [msg, current]).then(job_rows, None, [jobs_table]).then(
        watch, [current], views)
    jobs_table.select(pick_job, None, [current])
    current.change(watch, [current], views)
    stop.click(stop_job, [current], [msg]).then(job_rows, None, [jobs_table])
    resume.click(resume_job, [current], [msg]).then(job_rows, None, [jobs_table])
    timer.tick(poll, [current], views + [jobs_table],
               show_progress="hidden")
    # After a reload the newest job is selected again: jobs outlive the page.
    if tab is not None:
        tab.select(latest_job, [current], [current, jobs_table, preview], show_progress="hidden")
    return current


def read_config(path):
    p = Path(path or "")
    if not p.is_absolute():
        p = CONFIG_DIR.parent / p
    return p.read_text(encoding="utf-8")[:6000] if p.is_file() else ""


def start_job(kind, config, max_steps=None):
    p = Path(config or "")
    if not p.is_absolute():
        p = CONFIG_DIR.parent / p
    if not p.is_file():
        return f"✗ Config not found: `{esc(config)}`", gr.skip()
    job_id = jobs.start(kind, str(p), max_steps=int(max_steps) if max_steps else None)
    return f"► Started job `{job_id}` ({kind}) in the background.", job_id


def job_rows():
    rows = []
    for j in storage.store().list_jobs(limit=30):
        j = jobs.refresh(j)
        cfg = Path((__import__("json").loads(j["config"] or "{}")).get("path", "")).name
        rows.append([j["id"], j["kind"], cfg, j["status"], time.strftime("%H:%M:%S", time.localtime(j["created_at"])),
                     time.strftime("%H:%M:%S", time.localtime(j["updated_at"]))])
    return rows


def latest_job(current):
    rows = job_rows()
    job_id = current or (rows[0][0] if rows else None)
    return job_id, rows, gr.skip()


def pick_job(evt: gr.SelectData):
    row = evt.row_value if evt is not None else None
    return row[0] if row else None


def stop_job(job_id):
    return jobs.stop(job_id) if job_id else "Select a job first."


def resume_job(job_id):
    return jobs.resume(job_id) if job_id else "Select a job first."


def poll(job_id):
    if not job_id:
        return (gr.skip(),) * (len(CHARTS) + 2) + (job_rows(),)
    return watch(job_id) + (job_rows(),)


def watch(job_id):
    """Status line, five plotly charts and the log tail of one job."""
    if not job_id:
        return ("Select a job.", *(None,) * len(CHARTS), "")
    job = storage.store().get_job(job_id)
    if job is None:
        return (f"Job `{esc(job_id)}` not found.", *(None,) * len(CHARTS), "")
    job = jobs.refresh(job)
    rows = jobs.metrics(job["run_dir"])
    last = rows[-1] if rows else {}
    trainer = jobs.run_status(job["run_dir"])
    step = trainer.get("step", last.get("step", len(rows)))
    total = f"/{trainer['total_steps']}" if trainer.get("total_steps") else ""
    state = f" (trainer: {esc(trainer['state'])})" if trainer.get("state") else ""
    status = (f"**{job['id']}** · {job['kind']} · **{job['status']}**{state} · step {step}{total} · "
              f"{len(rows)} metric rows"
              + (f" · {esc(job['message'])}" if job.get("message") and job["status"] != "running" else "")
              + f"  \nrun dir `{job['run_dir']}`")
    rows = [_flatten(r) for r in rows]
    series = chart_series(rows)
    return (status, *(_figure(rows, series[name], axis) for name, axis in CHARTS), jobs.log_tail(job["run_dir"]))


# The charts in the order the view shows them: (series group, y axis).
CHARTS = (("loss", "loss"), ("reward", "reward"), ("kl", "KL"), ("tools", "count"), ("skills", "count"))


def chart_series(rows: list[dict]) -> dict[str, list[str]]:
    """Which numeric columns of flattened metric rows each chart draws."""
    keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and k not in ("step", "epoch", "time")})
    kl = [k for k in keys if "kl" in k.lower()]
    return {
        "loss": [k for k in keys if "loss" in k and k not in kl],
        "reward": [k for k in keys if "reward" in k
                   or (k.endswith("_mean") and not k.startswith(("adv", "tool", "timings")))],
        "kl": kl,
        # Pictures bound per step sit beside the tool calls: GRPO once unlearned binding them unseen.
        "tools": [k for k in keys if k.startswith(("tool_calls", "tool_counts.", "pictures.", "guide_hit_rate"))],
        "skills": [k for k in keys if k.startswith("skill_counts.")],
    }


def _flatten(record: dict) -> dict:
    """Nested counters (tool_counts, skill_counts) become ``tool_counts.search``-style series."""
    out = {}
    for k, v in record.items():
        if isinstance(v, dict) and k != "timings":
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def _figure(rows: list[dict], keys: list[str], ylabel: str):
    if not rows or not keys:
        return None
    import plotly.graph_objects as go

    fig = go.Figure()
    for k in keys[:MAX_SERIES]:
        pts = [(r.get("step", i), r[k]) for i, r in enumerate(rows) if isinstance(r.get(k), (int, float))]
        if pts:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=k,
                                     marker=dict(size=4)))
    fig.update_layout(height=260, margin=dict(l=40, r=10, t=20, b=30), template="plotly_white",
                      xaxis_title="step", yaxis_title=ylabel, legend=dict(orientation="h", y=-0.25))
    return fig
