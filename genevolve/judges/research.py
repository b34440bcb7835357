"""What research a program carries: facts from search results, bound references, and text
that has no place in a prompt for a renderer.

Shared by the program-quality eval (``genevolve.bench.programs``) and the sufficiency judge that
GRPO's text reward uses, so training pays for exactly what the eval measures. Relevance — whether
a source is about something the request names — is ``genevolve.relevance``.
"""

from __future__ import annotations

import re

# Reasoning or protocol text that has no place in a prompt for a renderer.
LEAK_PATTERNS = [
    r"</?(?:think|tool_call|tool_response|answer)>",
    r"\{\s*\"(?:name|arguments|gen_prompt|reference_images|queries|skill_name)\"",
    r"\b(?:query_knowledge|image_search|tool_call|tool_response|gen_prompt|reference_images)\b",
    r"\bIMG_\d{3}\b",
    r"(?i)\b(?:I will|I'll|I need to|I should|I have|I think|let me|let's|we need to|my plan|first, I)\b",
    r"(?i)\bthe user(?:'s)? (?:wants|asks|asked|requests|requested|request|is asking)\b",
    r"(?i)\b(?:the request (?:asks|says|wants)|the prompt (?:asks|says))\b",
]
SHARED_RUN = 6  # words a gen_prompt sentence must share in a row with a search passage to count as carried


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def _runs(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def leaks(prompt: str, request: str) -> list[str]:
    """The reasoning or protocol fragments in ``prompt`` that the request itself does not contain."""
    found = []
    for pattern in LEAK_PATTERNS:
        for m in re.finditer(pattern, prompt):
            if m.group(0).lower() not in request.lower():
                found.append(m.group(0))
    return found


def search_sources(traj) -> list[tuple[str, str]]:
    """(title, passage) of every search result the trajectory received."""
    from genevolve.tools.search import digest_results

    out = []
    for s in traj.steps:
        if s.kind == "tool_call" and s.tool_name == "search" and s.tool_text:
            out += digest_results(s.tool_text)
    return out


def carried_facts(prompt: str, request: str, sources: list[tuple[str, str]]) -> list[dict]:
    """Sentences of ``prompt`` that came from a search result: ``{"fact", "sources", "relevant"}``."""
    from genevolve.relevance import sentence_relevant

    request_runs = _runs(_words(request), SHARED_RUN)
    indexed = [(title, passage, _runs(_words(passage), SHARED_RUN)) for title, passage in sources]
    out = []
    for sentence in _sentences(prompt):
        runs = _runs(_words(sentence), SHARED_RUN) - request_runs
        if not runs:
            continue
        matched = [(title, passage) for title, passage, passage_runs in indexed if runs & passage_runs]
        if matched:
            out.append({"fact": sentence, "sources": sorted({t for t, _ in matched}),
                        "relevant": any(sentence_relevant(request, t, p, sentence) for t, p in matched)})
    return out


def bound_references(program, traj, request: str) -> list[dict]:
    from genevolve.relevance import about_request

    out = []
    for ref in program.reference_images if program else []:
        image = traj.image(ref.img_id) if hasattr(traj, "image") else None
        if image is None:
            out.append({"img_id": ref.img_id, "title": None, "relevant": False})
            continue
        relevant = image.source == "user" or about_request(request, image.title or "", image.caption or "")
        out.append({"img_id": ref.img_id, "title": image.title, "source": image.source, "relevant": relevant})
    return out
