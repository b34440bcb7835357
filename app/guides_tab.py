"""Decision Guides tab: the SDL buffer from the store, and which guide a request would retrieve.

Listing reads the store's guides table directly; the query uses
``genevolve.training.sdl.retrieve_guide`` (embedding of trigger + summary, top-1, cosine gate),
so what this page shows is exactly what training would inject into the teacher's context.
"""

from __future__ import annotations

import time

import gradio as gr

from app import markup, optional_parts, storage
from app.markup import esc


def build(sid_state, tab=None):
    with gr.Row():
        search = gr.Textbox(label="Filter guides", placeholder="words in trigger, summary or source prompt", scale=4)
        refresh = gr.Button("Refresh", scale=1, elem_id="gu-refresh")
    count = gr.Markdown("", elem_id="gu-count")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            listing = gr.HTML("<div class='ge-empty'>Loading…</div>", elem_id="gu-list")
        with gr.Column(scale=2):
            gr.Markdown("### Which guide would be retrieved?")
            query = gr.Textbox(label="Request", lines=3, elem_id="gu-query",
                               placeholder='A bakery poster with the headline "FRESH BREAD"')
            ask = gr.Button("Retrieve", variant="primary", elem_id="gu-ask")
            answer = gr.HTML("", elem_id="gu-answer")
    refresh.click(list_guides, [search], [listing, count])
    search.submit(list_guides, [search], [listing, count])
    ask.click(retrieve, [query], [answer, listing, count], concurrency_id="model")
    if tab is not None:
        tab.select(list_guides, [search], [listing, count], show_progress="hidden")


def list_guides(search: str = ""):
    guides = storage.store().list_guides()
    words = [w.lower() for w in (search or "").split()]
    shown = [g for g in reversed(guides)
             if not words or all(w in f"{g['trigger']} {g['summary']} {g.get('source_prompt') or ''}".lower() for w in words)]
    if not guides:
        return ("<div class='ge-empty'>The buffer is empty. GRPO with SDL fills it: each prompt's best and worst "
                "rollouts are distilled into a guide (start one in the Training tab).</div>", "0 guides")
    return "".join(guide_card(g) for g in shown[:200]), f"{len(shown)} of {len(guides)} guides (buffer capacity 500)"


def guide_card(g: dict, extra: str = "") -> str:
    kinds = []
    guidance = g.get("guidance") or {}
    try:  # the six kinds in their fixed order (empty ones shown as such)
        from genevolve.training.sdl import GUIDE_KINDS

        guidance = {**guidance, **{k: guidance.get(k) or ["—"] for k in GUIDE_KINDS}}
    except ImportError:
        pass
    for kind, bullets in guidance.items():
        if isinstance(bullets, str):
            bullets = [bullets]
        items = "".join(f"<li>{esc(b)}</li>" for b in bullets or [])
        kinds.append(f"<div class='ge-label'>{esc(kind.replace('_', ' '))}</div><ul>{items}</ul>")
    gap = g.get("reward_gap")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(g.get("created_at") or 0))
    return (f"<div class='ge-guide' data-guide-id='{esc(g.get('id'))}'>{extra}<h4>{esc(g['trigger'])}</h4>"
            f"<div>{esc(g['summary'])}</div>{''.join(kinds)}"
            f"<div class='ge-meta'>source prompt: {esc(g.get('source_prompt') or '—')}</div>"
            f"<div class='ge-meta'><span class='ge-chip'>reward gap {'—' if gap is None else f'{gap:.2f}'}</span>"
            f"<span class='ge-chip'>retrieved {int(g.get('times_retrieved') or 0)}×</span> {when}</div></div>")


def retrieve(query):
    query = (query or "").strip()
    if not query:
        return markup.error_html("Write a request to look up."), gr.skip(), gr.skip()
    if not optional_parts.available("genevolve.training.sdl"):
        return optional_parts.missing_html("Guide retrieval", "genevolve.training.sdl"), gr.skip(), gr.skip()
    from genevolve.training.sdl import retrieve_guide

    try:
        guide, cosine, passes = retrieve_guide(query, storage.store())
    except Exception as exc:  # noqa: BLE001 - e.g. the embedding model is missing
        return markup.error_html(f"Retrieval failed: {type(exc).__name__}: {exc}"), gr.skip(), gr.skip()
    if guide is None:
        return "<div class='ge-empty'>No guide in the buffer yet.</div>", gr.skip(), gr.skip()
    chip = (f"<span class='ge-chip {'ge-pass' if passes else 'ge-fail'}'>cosine {cosine:.3f} · "
            f"{'passes' if passes else 'below'} the gate</span>")
    listing, count = list_guides("")
    return guide_card(guide if isinstance(guide, dict) else dict(guide), chip), listing, count
