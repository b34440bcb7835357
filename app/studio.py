"""Assembles the studio's tabs into one Gradio Blocks app."""

from __future__ import annotations

import os


def build_studio():
    import gradio as gr

    from app import generate_tab

    with gr.Blocks(title="GenEvolve Studio") as demo:
        gr.Markdown("# GenEvolve Studio\nResearch, reference, program, render — offline by default.")
        with gr.Tab("Generate"):
            generate_tab.build()
    return demo


def launch(host: str | None = None, port: int | None = None, share: bool = False) -> None:
    demo = build_studio()
    demo.queue(default_concurrency_limit=int(os.environ.get("GENEVOLVE_CONCURRENCY", "2")))
    demo.launch(server_name=host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                server_port=port or int(os.environ.get("GRADIO_SERVER_PORT", "7860")), share=share)
