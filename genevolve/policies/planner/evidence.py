"""What the planner takes from tool replies: facts from a search digest, the picture that shows a subject.

The reply formats themselves are read by the tools' own parsers (``genevolve.tools.search.
digest_passages`` and ``genevolve.tools.image_search.parse_image_lines``), next to the code that
writes them; this module only judges what they found.
"""

from __future__ import annotations

import re
from typing import Sequence

from genevolve.english import VISUAL_WORDS, singular, words
from genevolve.program import IMG_ID_RE, ORDINAL_REF_RE
from genevolve.tools.image_search import ImageLine
from genevolve.tools.search import digest_passages, digest_results


def facts_from(text: str, queries: Sequence, request: str | None = None) -> list[str]:
    """Up to two clean sentences per queried entity from a search reply, five at most in all.

    With ``request``, only results whose source is about something the request names count
    (``genevolve.relevance``): a search for "World Snooker Championship" that finds the Golden Gate
    Bridge article because both say "world" yields nothing, and nothing is the right answer.
    Sentences cut off by the digest ("…") are dropped; sentences about how a thing looks come first.
    """
    from genevolve.relevance import sentence_relevant

    sentences: list[str] = []
    if request is None:
        for passage in digest_passages(text):
            sentences += [x.strip() for x in re.split(r"(?<=[.!?])\s+", passage) if x.strip()]
    else:
        for title, passage in digest_results(text):
            sentences += [x.strip() for x in re.split(r"(?<=[.!?])\s+", passage)
                          if x.strip() and sentence_relevant(request, title, passage, x.strip(), queries)]
    sentences = [x for x in sentences if not x.endswith(("…", "..."))]
    facts: list[str] = []
    for q in queries:
        keys = {w for w in words(str(q)) if len(w) > 2}
        taken = 0
        # What a thing looks like helps the renderer more than its history: visual sentences first.
        for sentence in sorted(sentences, key=lambda x: -len(VISUAL_WORDS & set(words(x)))):
            clean = clean_fact(sentence)
            if not clean or clean in facts or not keys & set(words(clean)):
                continue
            facts.append(clean)
            taken += 1
            if taken == 2 or len(facts) >= 5:
                break
    return facts


def clean_fact(sentence: str) -> str:
    """A sentence fit for the brief, or "" when it is too short, cites a reference or says nothing."""
    s = IMG_ID_RE.sub("", sentence)
    s = re.sub(r"[\"“”«»「」]", "", s)  # quotes would turn a fact into text to draw
    s = re.sub(r"(?<!\w)'|'(?!\w)", "", s)
    s = re.sub(r"\[[^\]]*\]|\([^)]*\)", "", s)  # citation marks and asides
    s = re.sub(r"\s{2,}", " ", s).strip(" -–—:")
    s = re.sub(r"^[^.:]{1,40}:\s+(?=[A-Z])", "", s)  # a digest's "Title: " label
    if ORDINAL_REF_RE.search(s) or len(s) < 20 or not re.search(r"[a-z]{3}", s):
        return ""
    if len(s) > 240:
        s = s[:240].rsplit(" ", 1)[0] + "…"
    if not s.endswith((".", "!", "?", "…")):
        s += "."
    return s


def best_image(subject: str, found: list[ImageLine]) -> str | None:
    """The retrieved image that really shows the subject, or None.

    A name ("Eiffel Tower") must appear whole in the title or caption; a generic noun must be in
    the title, or all its words in the caption. A caption that merely mentions "towers" is no
    picture of the Eiffel Tower.
    """
    want = [singular(w) for w in words(subject) if len(w) > 2]
    if not want:
        return None
    is_name = subject[:1].isupper() or any(c.isupper() for c in subject[1:])
    best, best_score = None, 0.0
    for line in found:
        in_title = {singular(w) for w in words(line.title)} & set(want)
        in_all = {singular(w) for w in words(line.title) + words(line.caption)} & set(want)
        if is_name:
            ok = len(in_all) == len(set(want))
        else:
            ok = bool(in_title) or len(in_all) == len(set(want))
        score = 2 * len(in_title) + len(in_all)
        if ok and score > best_score:
            best, best_score = line.img_id, score
    return best
