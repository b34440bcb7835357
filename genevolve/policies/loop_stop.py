"""Close a gen_prompt that has started to loop, while it is being decoded.

A small model decoding greedily falls into loops ("High detail, coherent single image, no
watermark, no stray text." thirteen times): the answer step keeps each sentence once afterwards
(``program.without_repeats``), but every looped sentence has already cost its decode time, up to
the gen_prompt's token cap. ``LoopStop`` is a transformers logits processor that watches each row's
gen_prompt string and, as soon as a sentence ends that the string has said before, lets the row
emit only the closing quote: the program ends there and the turn's JSON goes on as usual.
Only the local policy's own turns use it; GRPO's rollouts decode without it, so the reward sees,
and costs, the loops the model makes.
"""

from __future__ import annotations

import json
import re

_OPENING = re.compile(r'"gen_prompt"\s*:\s*"')
_STRING_BODY = re.compile(r'(?:[^"\\]|\\.)*\\?')  # a trailing lone backslash: an escape not yet done


def open_gen_prompt(completion: str) -> str | None:
    """The text of the gen_prompt string while it is still open in ``completion``, else None."""
    m = _OPENING.search(completion)
    if m is None:
        return None
    body = _STRING_BODY.match(completion, m.end()).group(0)
    if m.end() + len(body) < len(completion):  # the closing quote has come
        return None
    body = re.sub(r"\\u[0-9a-fA-F]{0,3}$|\\$", "", body)  # an escape cut off mid-way
    try:
        return json.loads(f'"{body}"')
    except ValueError:
        return body.replace('\\"', '"').replace("\\n", "\n").replace("\\t", "\t")


def ends_with_repeat(prompt: str) -> bool:
    """``prompt`` has just ended a sentence of three words or more that it said before."""
    from genevolve.program import prompt_sentences, sentence_key

    if not prompt.rstrip().endswith((".", "!", "?")):
        return False
    sentences = prompt_sentences(prompt)
    last = sentence_key(sentences[-1]) if sentences else ""
    return len(last.split()) >= 3 and any(sentence_key(s) == last for s in sentences[:-1])


class LoopStop:
    """Logits processor: a row whose open gen_prompt ends with a repeated sentence may only close it.

    ``closed`` counts the rows it closed (a turn's report says so)."""

    def __init__(self, tokenizer, prompt_len: int):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.quote_id = self._quote_token(tokenizer)
        self.closed = 0

    @staticmethod
    def _quote_token(tokenizer) -> int | None:
        ids = tokenizer.encode('"', add_special_tokens=False)
        return ids[0] if len(ids) == 1 else None

    def __call__(self, input_ids, scores):
        if self.quote_id is None or input_ids.shape[1] <= self.prompt_len:
            return scores
        for row in range(input_ids.shape[0]):
            # Cheap first: only a step whose last token ends a sentence can end a repeat.
            last = self.tokenizer.decode(input_ids[row, -1:].tolist(), skip_special_tokens=True)
            if not re.search(r"[.!?]\s*$", last):
                continue
            completion = self.tokenizer.decode(input_ids[row, self.prompt_len:].tolist(), skip_special_tokens=True)
            prompt = open_gen_prompt(completion)
            if prompt is None or not ends_with_repeat(prompt):
                continue
            if scores[row, self.quote_id] == float("-inf"):  # the grammar does not allow closing here
                continue
            keep = scores[row, self.quote_id].clone()
            scores[row] = float("-inf")
            scores[row, self.quote_id] = keep
            self.closed += 1
        return scores
