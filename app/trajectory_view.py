"""HTML views of a trajectory: the live event panel, the program card, the verification report.

The live panel and the Inspector's timeline are the same cards: the panel builds them from
streamed events, the Inspector from stored steps. Every card is plain HTML with stable class
names (``ge-ev-tool_call``…) so tests and styles can find them.
"""

from __future__ import annotations

import json
import re

from app.markup import esc
from app.thumbnails import thumb_uri

SKILL_TOOL = "query_knowledge"


def _args(arguments) -> str:
    try:
        return json.dumps(arguments, ensure_ascii=False, indent=1)
    except TypeError:
        return str(arguments)


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


def _result_body(name: str, text: str, images) -> str:
    text = text or ""
    if name == SKILL_TOOL:
        first = text.strip().splitlines()[0] if text.strip() else "guidance"
        return (f"<details class='ge-skill'><summary>{esc(first[:120])}</summary>"
                f"<pre class='ge-pre'>{esc(text)}</pre></details>")
    body = ""
    if name == "search":
        # A digest with sources: keep the text, turn bare URLs into links.
        linked = re.sub(r"(https?://[^\s<>\"')]+)", r"<a href='\1' target='_blank' rel='noopener'>\1</a>", esc(text[:4000]))
        body = f"<div class='ge-digest'>{linked}</div>"
    else:
        body = f"<pre class='ge-pre'>{esc(text[:3000])}</pre>"
    return _image_strip(images) + body


class EventPanel:
    """Accumulates agent events and renders the side panel as HTML."""

    def __init__(self):
        self.cards: list[str] = []
        self.thinking = ""
        self.thinking_round: int | None = None
        self.counts: dict[str, int] = {}
        self.images: list = []  # every ImageRef shown so far (for the gallery)

    def _add(self, kind: str, html: str, round_: int | None = None) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        label = f"<span class='ge-round'>R{round_}</span>" if round_ else ""
        self.cards.append(f"<div class='ge-ev ge-ev-{kind}' data-type='{kind}'>{label}{html}</div>")

    def _flush_thinking(self) -> None:
        text = _think_only(self.thinking)
        if text.strip():
            self._add("thinking", f"<details class='ge-think'><summary>thinking</summary>"
                      f"<div class='ge-think-text'>{esc(text.strip())}</div></details>", self.thinking_round)
        self.thinking, self.thinking_round = "", None

    def add(self, event) -> None:
        t = event.type
        if t == "text_delta":
            if self.thinking_round != event.round:
                self._flush_thinking()
                self.thinking_round = event.round
            self.thinking += event.text
            return
        self._flush_thinking()
        if t == "round_start":
            self._add("round_start", f"<div class='ge-rule'>round {event.round}{' · final' if event.final else ''}</div>")
        elif t == "tool_call":
            self._add("tool_call", f"<div class='ge-head'>→ <b>{esc(event.name)}</b></div>"
                      f"<pre class='ge-pre ge-args'>{esc(_args(event.arguments))}</pre>", event.round)
        elif t == "tool_result":
            self.images.extend(event.images)
            meta = f"{esc(event.backend or '')} · {event.elapsed_s:.2f}s"
            err = f" <span class='ge-bad'>{esc(event.error)}</span>" if event.error else ""
            n = f" · {len(event.images)} image(s)" if event.images else ""
            self._add("tool_result", f"<div class='ge-head'>← <b>{esc(event.name)}</b> <span class='ge-meta'>"
                      f"{meta}{n}</span>{err}</div>" + _result_body(event.name, event.text, event.images), event.round)
        elif t == "format_error":
            self._add("format_error", f"<div class='ge-head ge-bad'>format error</div><div>{esc(event.error)}</div>",
                      event.round)
        elif t == "warning":
            self._add("warning", f"<div class='ge-warn'>⚠ {esc(event.message)}</div>", event.round)
        elif t == "answer":
            extra = " (forced in the final round)" if event.forced else ""
            repairs = "".join(f"<li>{esc(r)}</li>" for r in event.repairs)
            self._add("answer", f"<div class='ge-head ge-good'>✓ program written{extra}</div>"
                      + (f"<ul class='ge-repairs'>{repairs}</ul>" if repairs else ""), event.round)
        elif t == "done":
            tr = event.trajectory
            cls = "ge-good" if tr.ok else "ge-bad"
            self._add("done", f"<div class='ge-head {cls}'>{esc(tr.termination)}</div>"
                      f"<div class='ge-meta'>{len(tr.steps)} rounds · {len(tr.tool_calls())} tool calls · "
                      f"{tr.elapsed_s:.2f}s{(' · ' + esc(tr.reason)) if tr.reason else ''}</div>")

    def note(self, kind: str, html: str) -> None:
        self._flush_thinking()
        self._add(kind, html)

    def html(self) -> str:
        live = ""
        if self.thinking:
            live = (f"<div class='ge-ev ge-ev-thinking ge-live' data-type='thinking'>"
                    f"<span class='ge-round'>R{self.thinking_round}</span><div class='ge-think-text'>"
                    f"{esc(_think_only(self.thinking)[-1500:])}<span class='ge-caret'>▍</span></div></div>")
        if not self.cards and not live:
            return "<div class='ge-empty'>Events appear here as the agent works.</div>"
        return f"<div class='ge-events'>{''.join(self.cards)}{live}</div>"


def _think_only(text: str) -> str:
    """The readable part of a turn as it streams: the think block, not the raw call/answer markup."""
    text = text.replace("<think>", "")
    for stop in ("</think>", "<tool_call>", "<answer>"):
        if stop in text:
            text = text.split(stop, 1)[0]
    return text


# ---------------------------------------------------------------- the program and its report


def program_html(program, images_by_id: dict | None = None) -> str:
    """gen_prompt with ordinal references highlighted and linked to their thumbnails; constraints."""
    if program is None:
        return "<div class='ge-empty'>No program yet.</div>"
    from genevolve.program import ORDINAL_REF_RE, _ORDINAL_INDEX

    data = program if isinstance(program, dict) else program.model_dump()
    refs = data.get("reference_images") or []
    prompt = esc(data.get("gen_prompt", ""))

    def link(m: re.Match) -> str:
        n = _ORDINAL_INDEX.get(m.group(1).lower(), 0)
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
        ok = item.get("found")
        sim = item.get("similarity")
        rows.append(f"<tr class='{'ge-found' if ok else 'ge-missing-row'}'><td>{'✓ found' if ok else '✗ missing'}</td>"
                    f"<td>“{esc(item.get('text'))}”</td><td>{esc(item.get('best_match') or '—')}</td>"
                    f"<td>{'' if sim is None else f'{sim:.2f}'}</td></tr>")
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
    """A stored trajectory as the same cards the live panel shows, plus audit marks per step.

    The answer step carries what an annotator approves: the program (gen_prompt, references,
    constraints) and the image it rendered."""
    by_step: dict[int, list[dict]] = {}
    for a in audits or []:
        if a.get("step") is not None:
            by_step.setdefault(int(a["step"]), []).append(a)
    images = {i.img_id: i for i in traj.images}
    out = [f"<div class='ge-req'><b>request</b> {esc(traj.request)}</div>"]
    for s in traj.steps:
        marks = "".join(f"<span class='ge-verdict ge-v-{esc(a['verdict'])}'>{esc(a['verdict'])}"
                        f"{(': ' + esc(a['comment'])) if a.get('comment') else ''}</span>"
                        + (f"<pre class='ge-pre ge-fix'>fix: {esc(a['fix'])}</pre>" if a.get("fix") else "")
                        for a in by_step.get(s.round, []))
        body = ""
        if s.think:
            body += f"<details class='ge-think'><summary>thinking</summary><div class='ge-think-text'>{esc(s.think)}</div></details>"
        if s.kind == "tool_call":
            body += (f"<div class='ge-head'>→ <b>{esc(s.tool_name)}</b> <span class='ge-meta'>{esc(s.tool_backend or '')} · "
                     f"{s.tool_s:.2f}s</span></div><pre class='ge-pre ge-args'>{esc(_args(s.tool_arguments))}</pre>")
            body += _result_body(s.tool_name or "", s.tool_text or "", [images[i] for i in s.tool_images if i in images])
        elif s.kind == "answer":
            body += "<div class='ge-head ge-good'>✓ answer</div>"
            if traj.program is not None:
                body += program_html(traj.program, {i.img_id: i.to_dict() for i in traj.images})
            uri = thumb_uri(image_path, 480)
            body += (f"<div class='ge-label'>rendered image</div><img class='ge-rendered' src='{uri}' alt='rendered'>"
                     if uri else "<div class='ge-meta'>no rendered image stored for this run</div>")
        if s.error:
            body += f"<div class='ge-bad'>{esc(s.kind)}: {esc(s.error)}</div>"
        out.append(f"<div class='ge-ev ge-ev-step' data-step='{s.round}'><span class='ge-round'>R{s.round}</span>"
                   f"<span class='ge-kind'>{esc(s.kind)}</span>{marks}{body}</div>")
    out.append(f"<div class='ge-ev ge-ev-done'><div class='ge-head {'ge-good' if traj.ok else 'ge-bad'}'>"
               f"{esc(traj.termination)}</div><div class='ge-meta'>{esc(traj.reason or '')}</div></div>")
    return f"<div class='ge-events'>{''.join(out)}</div>"
