"""Placeholder texts in the official layout (tests only; never shipped as a prompt)."""

FINAL_STEP_MESSAGE = """\
[stand-in final-step message]
Last round. Reply with <answer>{...}</answer> only.
"""

SYSTEM_PROMPT = """[stand-in system prompt]
Plan in <think>, then emit one <tool_call>{"name": ..., "arguments": {...}}</tool_call>
or one <answer>{"gen_prompt": ..., "reference_images": [...]}</answer> per round.
Tools: search(queries), image_search(query), query_knowledge(skill_name).
"""
