"""Assembles the studio's tabs into one Gradio Blocks app and launches it.

Each tab lives in its own module with a ``build(sid_state, ...)`` function; this file only
lays them out, wires the per-browser session id and sets the queue (how many model runs may
execute at once: ``GENEVOLVE_CONCURRENCY``, default 1 on a CPU-only machine, 2 with a GPU).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from app.live_runs import default_concurrency

CSS_PATH = Path(__file__).with_name("studio.css")
# Keep the live panel scrolled to the newest event unless the user scrolled up to read.
HEAD = """<script>
new MutationObserver(() => {
  for (const box of document.querySelectorAll('#ge-events .ge-events')) {
    if (box.dataset.pinned !== 'no') box.scrollTop = box.scrollHeight;
    if (!box.dataset.watch) {
      box.dataset.watch = '1';
      box.addEventListener('scroll', () => {
        box.dataset.pinned = (box.scrollHeight - box.scrollTop - box.clientHeight < 40) ? 'yes' : 'no';
      });
    }
  }
  // Generate looks busy while this session's run goes (also after a reload re-attached to it):
  // the status line is the run's own word on that.
  const go = document.querySelector('#ge-go'), status = document.querySelector('#ge-status');
  if (go && status) {
    const text = status.innerText.trim();
    const busy = text.startsWith('\u25cf') || text.includes('Stopping\u2026');
    if (busy !== go.classList.contains('ge-busy')) {
      go.classList.toggle('ge-busy', busy);
      go.setAttribute('aria-disabled', busy ? 'true' : 'false');
    }
  }
}).observe(document.documentElement, {childList: true, subtree: true, characterData: true});
// The training log follows new output unless the user scrolled up to read (a textarea's value
// changes without a DOM mutation, so it is looked at twice a second).
setInterval(() => {
  const log = document.querySelector('#ge-log textarea');
  if (!log) return;
  if (!log.dataset.watch) {
    log.dataset.watch = '1';
    log.addEventListener('scroll', () => {
      log.dataset.pinned = (log.scrollHeight - log.scrollTop - log.clientHeight < 40) ? 'yes' : 'no';
    });
  }
  if (log.dataset.pinned !== 'no' && log.value !== log.dataset.seen) {
    log.dataset.seen = log.value;
    log.scrollTop = log.scrollHeight;
  }
}, 500);
</script>"""
HEADER = """<div id="ge-header"><div class="ge-logo">GenEvolve <span>Studio</span></div>
<div class="ge-tagline">research → reference → program → render → verify · offline by default</div></div>"""


def build_studio():
    import gradio as gr

    from app import bench_tab, generate_tab, guides_tab, inspector_tab, judge_tab, training_tab
    from app import sessions
    from app.generate_form import restore_unless_edited, takes_form

    # No usage analytics: the studio must work (and stay quiet) on a machine with no network.
    with gr.Blocks(title="GenEvolve Studio", fill_width=True, analytics_enabled=False) as demo:
        # The session id lives in the browser, so a reload keeps this browser's history and
        # another browser never shares it.
        sid_state = gr.BrowserState("", storage_key="genevolve_studio_session")
        gr.HTML(HEADER, padding=False)
        with gr.Tabs(elem_id="ge-tabs") as tabs:
            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
                gen = generate_tab.build(sid_state)
            with gr.Tab("Bench", id="bench", elem_id="tab-bench") as bench:
                bench_tab.build(sid_state, tabs=tabs, request_box=gen["request"], tab=bench,
                                uploads_box=gen["uploads"], form=gen["form"], upload_msg_box=gen["upload_msg"])
            with gr.Tab("Judge", id="judge", elem_id="tab-judge"):
                judge_tab.build(sid_state)
            with gr.Tab("Decision Guides", id="guides", elem_id="tab-guides") as guides:
                guides_tab.build(sid_state, tab=guides)
            with gr.Tab("Training", id="training", elem_id="tab-training") as training:
                training_tab.build(sid_state, tab=training)
            with gr.Tab("Inspector", id="inspector", elem_id="tab-inspector") as inspector:
                inspector_tab.build(sid_state, tab=inspector)
        sid_mark = gr.HTML("", elem_id="ge-session", padding=False)

        def ensure_session(sid):
            return sid or sessions.new_session_id()

        def restore_page(form, sid_value, request=None):
            """The session's form (fields the user already edited kept), then its mark and history:
            the session line appears only once the form is what it will stay."""
            sid = sessions.session_id(sid_value, request)
            mark = (f"<div class='ge-meta'>this browser's session <code>{sid}</code> · runs and images here are "
                    "private to it</div>")
            return (*restore_unless_edited(form, sid_value, request), mark, generate_tab.history_rows(sid))

        # A reload brings back the session's form and re-attaches to its run (still going, or just ended).
        demo.load(ensure_session, inputs=[sid_state], outputs=[sid_state], queue=False).then(
            takes_form(restore_page), [*gen["form"], sid_state], [*gen["form"], sid_mark, gen["history"]],
            queue=False).then(
            gen["attach"], [sid_state], gen["outputs"], concurrency_limit=None, show_progress="hidden")
    return demo


def launch(host: str | None = None, port: int | None = None, share: bool = False) -> None:
    from app.storage import studio_home
    from app.upload_limits import max_upload_mb

    demo = build_studio()
    threading.Thread(target=_warm_up, daemon=True, name="studio-warm-up").start()
    demo.queue(default_concurrency_limit=default_concurrency(), max_size=64)
    demo.launch(
        server_name=host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=port or int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        share=share,
        # Session folders hold downloads and renders; their names are random per browser.
        allowed_paths=[str(studio_home())],
        # Gradio refuses bigger uploads before they are written; the handlers also check each file's type.
        max_file_size=f"{max_upload_mb()}mb",
        css_paths=[CSS_PATH],
        head=HEAD,
        theme=_theme(),
        footer_links=["gradio"],
        ssr_mode=False,
    )


def _theme():
    import gradio as gr

    theme = gr.themes.Soft(primary_hue="indigo", secondary_hue="amber", neutral_hue="slate",
                           font=[gr.themes.Font(f) for f in ("Inter", "system-ui", "DejaVu Sans", "sans-serif")],
                           font_mono=[gr.themes.Font(f) for f in ("JetBrains Mono", "DejaVu Sans Mono", "monospace")])
    # An unchecked box must be visible on the light panel: a darker border than Soft's default.
    return theme.set(checkbox_border_color="*neutral_500", checkbox_border_color_dark="*neutral_400",
                     checkbox_border_width="1.5px")


def _warm_up() -> None:
    """Import the runtime before the first request, so its first event is not late by an import."""
    try:
        from app import generate_tab
        from genevolve.agent import build_agent  # noqa: F401
        from genevolve.tools import build_tools  # noqa: F401

        generate_tab._policy("planner")
        import genevolve.renderers  # noqa: F401
    except Exception:  # noqa: BLE001 - warming is an optimisation only
        pass
