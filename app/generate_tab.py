"""Generate tab: a request box whose agent events stream into the page as they happen."""

from __future__ import annotations

import json


def build():
    import gradio as gr

    request = gr.Textbox(label="Request", lines=3,
                         placeholder='A travel poster of the Eiffel Tower at dusk, title "PARIS" in bold serif')
    go = gr.Button("Generate", variant="primary")
    log = gr.Markdown(elem_id="event-log")
    go.click(run_agent, inputs=[request], outputs=[log])


def run_agent(request: str):
    from genevolve.agent import build_agent
    from genevolve.config import Settings

    agent = build_agent(Settings.load(), offline=True)
    lines: list[str] = []
    thinking = ""
    for event in agent.stream(request):
        if event.type == "text_delta":
            thinking += event.text
            yield "\n\n".join(lines + [f"> {thinking[-400:]}"])
            continue
        thinking = ""
        if event.type == "tool_call":
            lines.append(f"**→ {event.name}** `{json.dumps(event.arguments, ensure_ascii=False)}`")
        elif event.type == "tool_result":
            lines.append(f"**← {event.name}** ({event.elapsed_s:.2f}s)\n\n{event.text[:600]}")
        elif event.type == "format_error":
            lines.append(f"**format error:** {event.error}")
        elif event.type == "answer":
            lines.append("**program**\n```json\n" + json.dumps(event.program.to_official(), indent=2) + "\n```")
        elif event.type == "done":
            lines.append(f"*{event.trajectory.termination}* in {event.trajectory.elapsed_s:.2f}s")
        yield "\n\n".join(lines)
