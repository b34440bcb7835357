"""HTML views of a trajectory: the live event panel, the program card, the verification report.

The live panel and the Inspector's timeline draw the same cards with the same code: what each
event says comes from ``genevolve.event_view`` (one describer per event type, shared with the
CLI); ``card_html`` turns that description into HTML. The panel feeds it streamed events, the
Inspector the events rebuilt from a stored trajectory's steps. Every card is plain HTML with
stable class names (``ge-ev-tool_call``…) so tests and styles can find them.
"""

from __future__ import annotations

import re

from app.markup import esc
from app.thumbnails import thumb_uri
from genevolve.event_view import EventView, ThinkingFold, think_only, trajectory_events, views

_SEVERITY_CLASS = {"info": "", "good": " ge-good", "warn": " ge-warn", "bad": " ge-bad"}


def _image_strip(images) -> str:
    """IMG thumbnails with their ids (images: ImageRef objects or dicts)."""
    cells = []
    for ref in images:
        get = (lambda k: ref.get(k)) if isinstance(ref, dict) else (lambda k: getattr(ref, k, None))
        uri = thumb_uri(get("path"), 128)
        img = f"<img src='{uri}' alt='{esc(get('img_id'))}'>" if uri else "<div class='ge-noimg'>no file</div>"
        cells.append(f"<figure class='ge-thumb' data-img-id='{esc(get('img_id'))}'>{img}"
                     f"<figcaption><b>{esc(get('img_id'))}</b> {esc((get('title') or '')[:40])}"
                     f"<span class='ge-src'>{esc(get('source') or '')}</span></figcaption></figure>")
    return f"<div class='ge-strip'>{''.join(cells)}</div>" if cells else ""


def _body_html(view: EventView) -> str:
    text, form = view.body or "", view.body_format
    if form == "json":
        return f"<pre class='ge-pre ge-args'>{esc(text)}</pre>"
    if form == "skill":  # long guidance: its first line, the rest folded away
        first = text.strip().splitlines()[0] if text.strip() else "guidance"
        return (f"<details class='ge-skill'><summary>{esc(first[:120])}</summary>"
                f"<pre class='ge-pre'>{esc(text)}</pre></details>")
    if form == "digest":  # a digest with sources: keep the text, turn bare URLs into links
        linked = re.sub(r"(https?://[^\s<>\"')]+)", r"<a href='\1' target='_blank' rel='noopener'>\1</a>",
                        esc(text[:4000]))
        return f"<div class='ge-digest'>{linked}</div>"
    if form == "program":  # the program has its own pane (and its own card in the timeline)
        return ""
    return f"<pre class='ge-pre'>{esc(text[:3000])}</pre>" if text else ""


def card_html(view: EventView, *, round_label: bool = True) -> str:
    """One event card. Class names are stable (``ge-ev-tool_call``…) so tests and styles find them."""
    kind = esc(view.kind)
    if view.divider:
        return f"<div class='ge-ev ge-ev-{kind}' data-type='{kind}'><div class='ge-rule'>{esc(view.title)}</div></div>"
    if view.body_format == "thinking":
        inner = (f"<details class='ge-think'><summary>{esc(view.title)}</summary>"
                 f"<div class='ge-think-text'>{esc(view.body)}</div></details>")
    else:
        icon = f"{esc(view.icon)} " if view.icon else ""
        meta = f" <span class='ge-meta'>{esc(view.meta)}</span>" if view.meta else ""
        err = f" <span class='ge-bad'>{esc(view.error)}</span>" if view.error else ""
        notes = "".join(f"<li>{esc(n)}</li>" for n in view.notes)
        severity = _SEVERITY_CLASS.get(view.severity, "")
        inner = (f"<div class='ge-head{severity}'>{icon}{esc(view.title)}{meta}{err}</div>"
                 + _image_strip(view.images) + _body_html(view)
                 + (f"<ul class='ge-repairs'>{notes}</ul>" if notes else ""))
    label = f"<span class='ge-round'>R{view.round}</span>" if round_label and view.round else ""
    return f"<div class='ge-ev ge-ev-{kind}' data-type='{kind}'>{label}{inner}</div>"


class EventPanel:
    """The Generate tab's live panel: agent events in, the side panel's HTML out."""

    def __init__(self):
        self.cards: list[str] = []
        self.fold = ThinkingFold()
        self.images: list = []  # every ImageRef shown so far (for the gallery)

    def add(self, event) -> None:
        """One agent event (a text delta joins the round's thinking, shown live until the round moves on)."""
        if event.type == "tool_result":
            self.images.extend(event.images)
        for view in self.fold.feed(event):
            self.cards.append(card_html(view))

    def add_view(self, view: EventView) -> None:
        """A card that is no agent event (the render's verification), after the thinking so far."""
        for pending in self.fold.flush():
            self.cards.append(card_html(pending))
        self.cards.append(card_html(view))

    def html(self) -> str:
        live = ""
        if self.fold.text:
            live = (f"<div class='ge-ev ge-ev-thinking ge-live' data-type='thinking'>"
                    f"<span class='ge-round'>R{self.fold.round}</span><div class='ge-think-text'>"
                    f"{esc(think_only(self.fold.text)[-1500:])}<span class='ge-caret'>▍</span></div></div>")
        if not self.cards and not live:
            return "<div class='ge-empty'>Events appear here as the agent works.</div>"
        return f"<div class='ge-events'>{''.join(self.cards)}{live}</div>"


# ---------------------------------------------------------------- the program and its report


def program_html(program, images_by_id: dict | None = None) -> str:
    """gen_prompt with ordinal references highlighted and linked to their thumbnails; constraints."""
    if program is None:
        return "<div class='ge-empty'>No program yet.</div>"
    from genevolve.program import ORDINAL_INDEX, ORDINAL_REF_RE

    data = program if isinstance(program, dict) else program.model_dump()
    refs = data.get("reference_images") or []
    prompt = esc(data.get("gen_prompt", ""))

    def link(m: re.Match) -> str:
        n = ORDINAL_INDEX.get(m.group(1).lower(), 0)
        known = 1 <= n <= len(refs)
        cls = "ge-ordref" if known else "ge-ordref ge-bad"
        tip = esc(refs[n - 1]["img_id"]) if known else "no such reference"
        return f"<a class='{cls}' href='#ge-ref-{n}' title='{tip}' data-ref='{n}'>{m.group(0)}</a>"

    prompt = ORDINAL_REF_RE.sub(link, prompt)
    cards = []
    for i, ref in enumerate(refs, 1):
        path = ref.get("path") or ((images_by_id or {}).get(ref["img_id"]) or {}).get("path")
        uri = thumb_uri(path, 200)
        img = f"<img src='{uri}'>" if uri else "<div class='ge-noimg'>no file</div>"
        cards.append(f"<figure class='ge-refcard' id='ge-ref-{i}'>{img}<figcaption><b>#{i} · {esc(ref['img_id'])}</b>"
                     f"<br>{esc(ref.get('note', ''))}</figcaption></figure>")
    rows = []
    for c in data.get("constraints") or []:
        if c.get("kind") == "text":
            what = f"text “{esc(c.get('text'))}”"
        elif c.get("kind") == "count":
            what = f"{c.get('count')} × {esc(c.get('subject'))}"
        else:
            what = f"{esc(c.get('subject'))} <i>{esc(c.get('relation'))}</i> {esc(c.get('object'))}"
        rows.append(f"<tr><td>{esc(c.get('kind'))}</td><td>{what}</td><td class='ge-meta'>{esc(c.get('source'))}</td></tr>")
    table = (f"<table class='ge-table'><tr><th>kind</th><th>constraint</th><th>from</th></tr>{''.join(rows)}</table>"
             if rows else "<div class='ge-meta'>No verifiable constraints derived.</div>")
    return (f"<div class='ge-program'><div class='ge-label'>gen_prompt</div><div class='ge-prompt'>{prompt}</div>"
            f"<div class='ge-label'>reference images</div><div class='ge-refs'>{''.join(cards) or '<i>none</i>'}</div>"
            f"<div class='ge-label'>derived constraints</div>{table}</div>")


def verification_html(report: dict | None, render: dict | None = None) -> str:
    if not report:
        return "<div class='ge-empty'>The verification report appears after rendering.</div>"
    if report.get("error"):
        return f"<div class='ge-error'>{esc(report['error'])}</div>"
    rows = []
    for item in report.get("constraints", []):
        status = item.get("status") or ("found" if item.get("found") else "missing")
        sim = item.get("similarity")
        mark, cls = {"found": ("✓ found", "ge-found"), "near": ("≈ near match", "ge-near-row")}.get(
            status, ("✗ missing", "ge-missing-row"))
        rows.append(f"<tr class='{cls}'><td>{mark}</td>"
                    f"<td>“{esc(item.get('text'))}”</td><td>{esc(item.get('best_match') or '—')}</td>"
                    f"<td>{'' if sim is None else f'{sim:.2f}'}</td></tr>")
    for item in report.get("extra_text") or []:
        rows.append(f"<tr class='ge-extra-row'><td>✗ not asked for</td><td>—</td>"
                    f"<td>{esc(item.get('text'))}</td><td></td></tr>")
    score = report.get("text_score")
    head = (f"<div class='ge-score'>text score <b>{score:.2f}</b></div>" if isinstance(score, (int, float))
            else "<div class='ge-meta'>No text constraints to check.</div>")
    table = (f"<table class='ge-table ge-verify'><tr><th></th><th>expected</th><th>OCR best match</th>"
             f"<th>similarity</th></tr>{''.join(rows)}</table>") if rows else ""
    extra = ""
    if render:
        extra = (f"<div class='ge-meta'>rendered by {esc(render.get('backend', '?'))} · "
                 f"{render.get('width', '?')}×{render.get('height', '?')}"
                 + (f" · {render['elapsed_s']:.2f}s" if isinstance(render.get('elapsed_s'), (int, float)) else "")
                 + "</div>")
    return f"<div class='ge-report'>{head}{table}{extra}</div>"


def timeline_html(traj, audits: list[dict] | None = None, image_path: str | None = None) -> str:
    """A stored trajectory as the live panel's cards (rebuilt from its steps), one block per step
    with its audit marks.

    The answer step also carries what an annotator approves: the program (gen_prompt, references,
    constraints) and the image it rendered."""
    by_step: dict[int, list[dict]] = {}
    for a in audits or []:
        if a.get("step") is not None:
            by_step.setdefault(int(a["step"]), []).append(a)
    cards: dict[int, list[EventView]] = {}
    after: list[EventView] = []  # warnings without a round, and the end
    for view in views(trajectory_events(traj)):
        if view.divider:
            continue  # each step's block says its round
        if view.round is None:
            after.append(view)
        else:
            cards.setdefault(view.round, []).append(view)
    out = [f"<div class='ge-req'><b>request</b> {esc(traj.request)}</div>"]
    for s in traj.steps:
        marks = "".join(f"<span class='ge-verdict ge-v-{esc(a['verdict'])}'>{esc(a['verdict'])}"
                        f"{(': ' + esc(a['comment'])) if a.get('comment') else ''}</span>"
                        + (f"<pre class='ge-pre ge-fix'>fix: {esc(a['fix'])}</pre>" if a.get("fix") else "")
                        for a in by_step.get(s.round, []))
        body = "".join(card_html(v, round_label=False) for v in cards.get(s.round, []))
        if s.kind == "answer":
            if traj.program is not None:
                body += program_html(traj.program, {i.img_id: i.to_dict() for i in traj.images})
            uri = thumb_uri(image_path, 480)
            body += (f"<div class='ge-label'>rendered image</div><img class='ge-rendered' src='{uri}' alt='rendered'>"
                     if uri else "<div class='ge-meta'>no rendered image stored for this run</div>")
        out.append(f"<div class='ge-ev ge-ev-step' data-step='{s.round}'><span class='ge-round'>R{s.round}</span>"
                   f"<span class='ge-kind'>{esc(s.kind)}</span>{marks}{body}</div>")
    out.extend(card_html(v) for v in after)
    return f"<div class='ge-events'>{''.join(out)}</div>"
