"""WISE_Verified: a binary 0/1 verdict per image from the prompt and its explanation.

Each WISE prompt names a thing only through world knowledge ("the tower built for the 1889
World's Fair"); the explanation says what the image must show. The overall score weights the
six categories as the benchmark does: 0.40·culture + 0.12·(time + space + biology + physics +
chemistry).
"""

from __future__ import annotations

import re

from genevolve.judges.base import Judge, Scores, case_question, image_data_uri
from genevolve.judges.chat_endpoint import ChatEndpoint, parse_json_reply

WISE_WEIGHTS = {"culture": 0.40, "time": 0.12, "space": 0.12, "biology": 0.12, "physics": 0.12, "chemistry": 0.12}

WISE_SYSTEM = ("You check whether an AI-generated image shows what a knowledge-dependent prompt "
               "really asks for. You reply with one JSON object and nothing else.")

WISE_RUBRIC = """Prompt given to the image generator:
<<<
{prompt}
>>>

What a correct image must show (the answer key):
<<<
{explanation}
>>>

Look at the image. Score 1 if it clearly depicts what the answer key describes - the right
entity, phenomenon or state, with the details the key says matter. Score 0 if it shows
something else, only a literal reading of the prompt's words, or the key's essential detail
is missing or wrong. Style and beauty do not matter here.

Reply with exactly: {{"rationale": "<one or two sentences>", "score": 0 | 1}}"""


def wise_category(name: str | None) -> str | None:
    """Map WISE labels to a weight key, or None when the label is not one of the six.

    Accepts a category, a subcategory or both joined ("Spatio-Temporal Reasoning Time",
    "Natural Science: Physics", "Cultural Common Sense"). The explicit words win over the
    umbrella terms, so "Spatio-temporal: Space" is space, not time.
    """
    s = str(name or "").lower()
    for key, pattern in (("culture", r"cultur"), ("space", r"\bspace\b"), ("time", r"\btime\b"),
                         ("biology", r"biolog"), ("physics", r"physic"), ("chemistry", r"chemi"),
                         ("time", r"tempor"), ("space", r"spati")):
        if re.search(pattern, s):
            return key
    return None


def wise_overall(category_means: dict[str, float]) -> float | None:
    """The weighted WISE overall from per-category means (keys as ``wise_category`` returns).

    Returns None unless all six categories are present: a partial run has no comparable overall.
    """
    if not all(k in category_means and category_means[k] is not None for k in WISE_WEIGHTS):
        return None
    return round(sum(w * category_means[k] for k, w in WISE_WEIGHTS.items()), 6)


def parse_wise_reply(text: str, judge: str = "wise") -> Scores:
    try:
        data = parse_json_reply(text)
    except ValueError as exc:
        return Scores.failed(judge, f"unreadable judge reply: {exc}", raw=text)
    lowered = {str(k).strip().lower(): v for k, v in data.items()}
    value = lowered.get("score", lowered.get("verdict"))
    if value is None:
        return Scores.failed(judge, "judge reply incomplete: missing field 'score'", raw=text)
    if isinstance(value, str):
        value = {"1": 1, "0": 0, "yes": 1, "no": 0, "true": 1, "false": 0,
                 "1.0": 1, "0.0": 0}.get(value.strip().lower(), value)
    if isinstance(value, bool):
        value = int(value)
    if value not in (0, 1):
        return Scores.failed(judge, f"score={value!r} is not 0 or 1", raw=text)
    return Scores(overall=float(value), rationale=str(lowered.get("rationale") or ""), judge=judge, raw=text,
                  details={"wise_score": int(value)})


class WiseJudge(Judge):
    def __init__(self, endpoint: ChatEndpoint, spec: str = "", max_side: int = 1280):
        self.endpoint = endpoint
        self.spec = spec or f"wise:{endpoint.model}@{endpoint.base_url}"
        self.max_side = max_side

    def _score(self, case, image, program, trajectory) -> Scores:
        if image is None:
            return Scores.failed(self.spec, "no image to judge (the rollout or the render failed)")
        prompt = case_question(case)
        explanation = str(case.get("explanation") or case.get("Explanation") or "").strip()
        if not prompt or not explanation:
            return Scores.failed(self.spec, "a WISE case needs both a prompt and an explanation")
        messages = [
            {"role": "system", "content": WISE_SYSTEM},
            {"role": "user", "content": [
                {"type": "text", "text": WISE_RUBRIC.format(prompt=prompt, explanation=explanation)},
                {"type": "image_url", "image_url": {"url": image_data_uri(image, self.max_side)}}]},
        ]
        scores = parse_wise_reply(self.endpoint.complete(messages), self.spec)
        scores.details["wise_category"] = case.get("wise_category") or wise_category(
            f"{case.get('category') or ''} {case.get('subcategory') or ''}")
        return scores
