"""report.html: one self-contained page (plotly.js inlined, works offline) for a bench run."""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path

from genevolve.bench.runner import write_atomic
from genevolve.judges.base import METRICS


def _fig_html(fig, left: int = 50) -> str:
    fig.update_layout(margin=dict(l=left, r=20, t=50, b=90), template="plotly_white")
    if fig.layout.height is None:
        fig.update_layout(height=440)
    return fig.to_html(full_html=False, include_plotlyjs=False)


def build_figures(summary: dict, rows: list[dict]) -> list[tuple[str, str]]:
    import plotly.graph_objects as go

    figs: list[tuple[str, str]] = []
    cats = summary.get("by", {}).get("category", {})
    if cats:
        names = list(cats)
        fig = go.Figure([
            go.Bar(name="overall (scored cases)", x=names, y=[cats[c]["overall"] for c in names]),
            go.Bar(name="overall (missing = 0)", x=names, y=[cats[c]["overall_missing_zero"] for c in names]),
        ])
        fig.update_layout(barmode="group", title="Overall by category (over measured dimensions only)",
                          yaxis=dict(range=[0, 1]))
        figs.append(("Per-category scores", _fig_html(fig)))

    dims = [m for m in METRICS if m != "overall"]
    tracks = summary.get("by", {}).get("track") or {"all": summary}
    # Each label carries how many cases measured it: "text_accuracy (n=12)"; "not measured" when none.
    labels = [f"{d} (n={summary.get(f'{d}_n', 0)})" if summary.get(f"{d}_n") else f"{d} (not measured)"
              for d in dims]
    fig = go.Figure([go.Bar(name=t, x=labels, y=[agg.get(d) for d in dims],
                            customdata=[agg.get(f"{d}_n", 0) for d in dims],
                            hovertemplate="%{x}: %{y} over %{customdata} cases<extra>" + t + "</extra>")
                     for t, agg in tracks.items()])
    fig.update_layout(barmode="group", title="Mean per dimension (measured cases only; n = cases measured)",
                      yaxis=dict(range=[0, 1]))
    figs.append(("Dimensions", _fig_html(fig)))

    tools = summary.get("tools", {})
    if tools.get("tool_calls"):
        t = tools["tool_calls"]
        fig = go.Figure(go.Bar(x=list(t), y=list(t.values())))
        fig.update_layout(title=f"Tool calls (mean {tools.get('mean_tool_calls')} per case)")
        figs.append(("Tool usage", _fig_html(fig)))
    routing = tools.get("skill_routing") or {}
    skills = sorted({s for v in routing.values() for s in v})
    if skills:
        cats_r = list(routing)
        fig = go.Figure(go.Heatmap(z=[[routing[c].get(s, 0) for s in skills] for c in cats_r], x=skills, y=cats_r,
                                   colorscale="Blues"))
        fig.update_layout(title="Skill routing: query_knowledge calls by category", height=520)
        figs.append(("Skill routing", _fig_html(fig, left=180)))

    by_cat = defaultdict(list)
    for r in rows:
        if r["status"] == "scored" and r.get("overall") is not None:
            by_cat[str(r.get("category"))].append(r["overall"])
    if by_cat:
        fig = go.Figure([go.Histogram(x=[v for vs in by_cat.values() for v in vs], nbinsx=20, name="overall")])
        fig.update_layout(title="Distribution of overall scores (scored cases)")
        figs.append(("Score distribution", _fig_html(fig)))
        fig = go.Figure([go.Box(y=v, name=k, boxpoints="all") for k, v in sorted(by_cat.items())])
        fig.update_layout(title="Overall by category (each point one case)", showlegend=False)
        figs.append(("Per-case scores", _fig_html(fig)))
    return figs


def render_report(summary: dict, rows: list[dict]) -> str:
    from plotly.offline import get_plotlyjs

    run = summary.get("run", {})
    head = " · ".join(f"{k}={html.escape(str(v))}" for k, v in run.items())
    counts = (f"{summary['cases']} cases: {summary['scored']} scored, {summary['failed']} failed, "
              f"{summary['missing']} missing · overall {summary['overall']} · "
              f"overall (missing = 0) {summary['overall_missing_zero']}")
    note = summary.get("overall_note") or ""
    sections = "".join(f"<section><h2>{html.escape(title)}</h2>{body}</section>"
                       for title, body in build_figures(summary, rows))
    failures = summary.get("failures") or []
    fail_rows = "".join(f"<tr><td>{html.escape(f['id'])}</td><td>{f['status']}</td>"
                        f"<td>{html.escape(str(f['error'] or ''))}</td></tr>" for f in failures)
    fail_html = (f"<section><h2>Not scored</h2><table><tr><th>case</th><th>status</th><th>reason</th></tr>"
                 f"{fail_rows}</table></section>") if failures else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>GenEvolve bench report</title>
<script type="text/javascript">{get_plotlyjs()}</script>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
section{{margin:2em 0}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
.meta{{color:#555}}</style></head>
<body><h1>GenEvolve bench report</h1><p class="meta">{head}</p><p><b>{html.escape(counts)}</b></p>
<p class="meta" id="overall-note">{html.escape(note)}</p>
{sections}{fail_html}</body></html>"""


def write_report(run_dir: str | Path, summary: dict, rows: list[dict]) -> Path:
    path = Path(run_dir) / "report.html"
    write_atomic(path, render_report(summary, rows))
    return path
