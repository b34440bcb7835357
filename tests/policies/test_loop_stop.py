"""A gen_prompt that starts to loop is closed while it decodes (genevolve.policies.loop_stop)."""

from __future__ import annotations

import pytest

from genevolve.policies.loop_stop import LoopStop, ends_with_repeat, open_gen_prompt

torch = pytest.importorskip("torch")

LOOP = "A cat on a mat. High detail, no stray text. Soft light. High detail, no stray text."


def test_the_open_gen_prompt_is_read_out_of_a_partial_turn():
    assert open_gen_prompt('<think>x</think>\n<tool_call>{"name": "search"') is None
    assert open_gen_prompt('<answer>{"gen_prompt": "A sign reading \\"OPEN\\". Warm') == 'A sign reading "OPEN". Warm'
    assert open_gen_prompt('<answer>{"gen_prompt": "Done.", "reference_images": [') is None  # closed already
    assert open_gen_prompt('<answer>{"gen_prompt": "Line one.\\nLine tw\\') == "Line one.\nLine tw"  # cut escape
    assert open_gen_prompt('{"gen_prompt":"caf\\u00') == "caf"


def test_a_repeat_is_seen_only_when_its_sentence_has_ended():
    assert ends_with_repeat(LOOP)
    assert not ends_with_repeat(LOOP[:-1])  # the second copy has not ended yet
    assert not ends_with_repeat("A cat on a mat. Soft light. Soft light.")  # under three words
    assert not ends_with_repeat('A sign "GO. GO. GO." on a wall. High detail, no stray text.')


def _policy(path):
    from genevolve.policies import make_policy

    return make_policy(f"hf:{path}?temperature=0&grammar=0", dtype=torch.float32)


class _Script:
    """A logits processor that makes the model write ``text`` (its tokens first by a wide margin,
    every other token still possible). Where a later processor made it write something else, it
    goes on with ``tail`` from there, then ends the turn."""

    def __init__(self, tokenizer, text: str, tail: str, prompt_len: int):
        self.ids = tokenizer.encode(text, add_special_tokens=False)
        self.tail = tokenizer.encode(tail, add_special_tokens=False)
        self.prompt_len = prompt_len
        self.eos = tokenizer.eos_token_id
        self.tail_from: int | None = None

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        if self.tail_from is None and 0 < step <= len(self.ids) and int(input_ids[0, -1]) != self.ids[step - 1]:
            self.tail_from = step
        if self.tail_from is not None:
            j = step - self.tail_from
            want = self.tail[j] if j < len(self.tail) else self.eos
        else:
            want = self.ids[step] if step < len(self.ids) else self.eos
        scores = torch.full_like(scores, -1e4)
        scores[:, want] = 0.0
        return scores


def test_a_looping_gen_prompt_is_closed_after_its_first_repeat(tiny_gemma_path):  # noqa: F811
    from genevolve.policies.local import _Inputs

    policy = _policy(tiny_gemma_path)
    tok = policy.tokenizer
    prompt = tok.encode("Plan an image of a cat.", add_special_tokens=False)
    tail = ', "reference_images": []}</answer>'
    looping = '<answer>{"gen_prompt": "' + LOOP + " High detail, no stray text." * 6 + '"' + tail
    outputs = {}
    for stop in (False, True):
        out = policy._generate(_Inputs(ids=list(prompt)), None, max_new_tokens=200, temperature=0.0, top_p=1.0,
                               processor=_Script(tok, looping, tail, len(prompt)), stop_loops=stop)
        outputs[stop] = tok.decode(out["completion"][0], skip_special_tokens=True)
    assert outputs[False].count("High detail, no stray text.") == 8  # the script's loop, untouched
    # With the stop: the second copy ends the string; nothing of the loop after it is decoded.
    assert outputs[True] == '<answer>{"gen_prompt": "' + LOOP + '"' + tail
    from genevolve.protocol import parse_turn

    assert parse_turn("<think>ok</think>\n" + outputs[True]).answer["gen_prompt"] == LOOP


def test_the_stop_leaves_closing_to_the_grammar_when_it_forbids_it(tiny_gemma_path):  # noqa: F811
    policy = _policy(tiny_gemma_path)
    tok = policy.tokenizer
    prompt = tok.encode("Plan.", add_special_tokens=False)
    ids = torch.tensor([prompt + tok.encode('<answer>{"gen_prompt": "' + LOOP, add_special_tokens=False)])
    stop = LoopStop(tok, prompt_len=len(prompt))
    quote = stop.quote_id
    scores = torch.zeros(1, len(tok))
    assert torch.isinf(stop(ids, scores.clone())).sum() == len(tok) - 1 and stop.closed == 1
    forbidden = scores.clone()
    forbidden[0, quote] = float("-inf")
    assert torch.equal(stop(ids, forbidden.clone()), forbidden) and stop.closed == 1
    # No repeat yet: untouched.
    ids = torch.tensor([prompt + tok.encode('<answer>{"gen_prompt": "A cat on a mat. Soft light.', add_special_tokens=False)])
    assert torch.equal(stop(ids, scores.clone()), scores)
