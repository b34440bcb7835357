"""Constrained decoding: every local-model turn is generated under the protocol's grammar.

A turn is ``<think>…</think>`` then exactly one ``<tool_call>{json}</tool_call>`` or
``<answer>{json}</answer>``. ``turn_grammar(rules)`` writes that grammar for one turn from the
run's state (``TurnRules``: which tools may be called, which skills exist, which IMG ids were
shown), and ``GrammarProcessor`` masks the logits so the model can only write a turn the
grammar accepts. What that guarantees, by construction:

* the turn parses: the tags, one action, JSON that ``json.loads`` reads, in the key order and
  spacing ``protocol.format_tool_call`` / ``format_answer`` write (what the adapter learned);
* a tool call names a tool that exists, with that tool's argument shape; a skill name is one
  of the skills that exist; the last round allows only an answer;
* an answer's ``reference_images`` are ids that were shown, distinct, sorted, at most
  ``max_references``; its ``gen_prompt`` names no image the answer does not bind ("the first
  reference image" needs one bound reference, "the second" two; with none bound no reference
  image at all), and holds no ``IMG_###`` id, URL or protocol tag;
* every free-text part has a token cap, so a turn ends within ``max_turn_tokens`` tokens. (The one
  gap: a gen_prompt that runs into its 400-token cap right after a lone backslash token of an
  escape would end unreadable; a cap is reached only by a runaway loop.)

The library is llguidance (Lark grammars with inline JSON schemas, and ``&``/``~`` on lexemes,
which the "no ordinal past the last shown image" rule needs); ``benchmarks/grammar_overhead.py``
measures it against xgrammar and unconstrained decoding on the real nano model.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from dataclasses import dataclass

from genevolve.program import ORDINALS, id_number

# Token caps of the free-text parts. A nano tool call is ~60 tokens and an answer ~220 (measured on
# the SFT data); the caps leave room and still bound the turn. A cap is a token count on the text
# between the JSON quotes (llguidance ends the text there): a character bound inside the lexeme
# would be exact but costs 5-30x more per token, and with the gen_prompt's exclusions it exceeds
# llguidance's lexer limits on Gemma's 262k vocabulary.
THINK_TOKENS = 160
QUERY_TOKENS = 40
GEN_PROMPT_TOKENS = 400
NOTE_TOKENS = 40
# Tokens outside the capped parts: tags, keys and punctuation (one token per character at worst).
_FIXED_TOKENS = 200

KNOWN_TOOLS = ("search", "image_search", "query_knowledge")


@dataclass(frozen=True)
class TurnRules:
    """What one turn may say, from the run's state."""

    tools: tuple[str, ...] = ()  # tools the model may call now; empty: an answer is due
    skills: tuple[str, ...] = ()  # query_knowledge's skill names
    image_ids: tuple[str, ...] = ()  # IMG ids shown so far (tool results and the user's images)
    user_ids: tuple[str, ...] = ()  # those of them the user gave (the rest came from tools)
    matching_ids: tuple[str, ...] = ()  # those a tool found that show what the request names
    max_references: int = 2

    @property
    def answer_only(self) -> bool:
        return not self.tools


def turn_rules(tools=None, image_ids=(), *, user_ids=(), matching_ids=(), max_references: int = 2,
               answer_only: bool = False) -> TurnRules:
    """The rules for a turn: ``tools`` the agent's tools (a name -> Tool dict or names; None: the
    three known tools), ``image_ids`` the ids shown so far, ``user_ids`` those the user gave,
    ``matching_ids`` those found that match the request, ``answer_only`` in the last round."""
    names = tuple(tools) if tools is not None else KNOWN_TOOLS
    skills: tuple[str, ...] = ()
    if "query_knowledge" in names:
        tool = tools.get("query_knowledge") if isinstance(tools, dict) else None
        skills = tuple(getattr(tool, "skills", None) or ())
        if not skills:
            from genevolve.tools.knowledge import SKILLS

            skills = tuple(SKILLS)
    return TurnRules(tools=() if answer_only else names, skills=skills,
                     image_ids=tuple(i for i in image_ids if i), user_ids=tuple(i for i in user_ids if i),
                     matching_ids=tuple(i for i in matching_ids if i), max_references=max_references)


# The planner's verdict on a picture it binds (``planner?verdicts=1``): "IMG_002 shows cat, so I bind it."
_BOUND_BY_VERDICT = re.compile(r"\b(IMG_\d+) shows [^.<]*?, so I bind it\.")


def held_to_verdicts(rules: TurnRules, messages: list[dict]) -> TurnRules:
    """``rules`` whose answer may bind a picture a tool found only after one of the model's own
    turns said "IMG_### shows …, so I bind it."; the user's pictures (``rules.user_ids``) stay
    bindable. A student trained on the planner's verdicts read an empty reply right, yet bound
    whatever id came back whatever its verdict said: this makes the answer keep to the thought."""
    bound: set[str] = set()
    for message in messages:
        if message.get("role") != "assistant":
            continue
        content = message.get("content")
        text = content if isinstance(content, str) else " ".join(
            part.get("text", "") for part in content or () if isinstance(part, dict))
        bound.update(_BOUND_BY_VERDICT.findall(text))
    keep = tuple(i for i in rules.image_ids if i in rules.user_ids or i in bound)
    return dataclasses.replace(rules, image_ids=keep)


def held_to_matches(rules: TurnRules) -> TurnRules:
    """``rules`` whose answer may bind, besides the user's pictures, only the found pictures that show
    what the request names in no colour it contradicts (``rules.matching_ids``, from
    ``relevance.picture_matches``: the planner teacher's and the reward's test). Whether to bind
    one stays the model's call; which one it may bind is the rule's. Neither verdict data nor
    near-miss requests taught a 270M student to read a caption against the request."""
    keep = tuple(i for i in rules.image_ids if i in rules.user_ids or i in rules.matching_ids)
    return dataclasses.replace(rules, image_ids=keep)


def max_turn_tokens(rules: TurnRules) -> int:
    """An upper bound on a turn's length under ``turn_grammar(rules)``, in tokens."""
    answer = GEN_PROMPT_TOKENS + min(rules.max_references, len(rules.image_ids)) * NOTE_TOKENS
    call = 3 * QUERY_TOKENS
    return THINK_TOKENS + max(answer, call) + _FIXED_TOKENS


def _lit(text: str) -> str:
    """A Lark string literal for ``text`` (JSON's escapes are Lark's)."""
    return json.dumps(text, ensure_ascii=False)


# One character of a JSON string; "<" is left out, so no protocol tag can be opened inside one
# (JSON's own escape "\u003c" stays possible for text that needs it).
_CHAR = r'([^"\\\x00-\x1f<]|\\["\\\/bfnrt]|\\u[0-9a-fA-F]{4})'


def _string(name: str, tokens: int, body: str) -> list[str]:
    """Rules for a JSON string whose text (``body``, a lexeme) has at most ``tokens`` tokens."""
    return [f'{name}: "\\"" {name}_text "\\""', f"{name}_text[max_tokens={tokens}]: {body}"]


_ANY = "(?s:.*)"
_IMAGE_WORD = "(?i:image|photo|picture|reference)"


def _forbidden_in_prompt(shown: int) -> str:
    """A regex for what a gen_prompt may not contain when ``shown`` references can be cited."""
    parts = [r"IMG_[0-9]", r"(?i:https?:|www\.)"]
    if shown == 0:
        parts.append(r"(?i:reference)[ ]+(?i:image|photo|picture)")
    past = ORDINALS[shown:] + [f"{n}{'st' if n == 1 else 'nd' if n == 2 else 'rd' if n == 3 else 'th'}"
                               for n in range(shown + 1, len(ORDINALS) + 1)]
    if past:
        words = "|".join(past)
        parts.append(rf"(?i:{words})[ ]+((?i:reference)[ ]+)?{_IMAGE_WORD}")
    return f"/{_ANY}({'|'.join(parts)}){_ANY}/"


TAGS = ("think", "tool_call", "answer")


def turn_grammar(rules: TurnRules, token_tags: frozenset[str] = frozenset()) -> str:
    """The Lark grammar (llguidance dialect) of one assistant turn under ``rules``.

    ``token_tags``: the protocol tags (``<think>``, ``</answer>``…) the tokenizer holds as single
    added tokens; those may be written as that token or as plain text."""
    actions = ["answer"]
    lines = [
        # One newline after </think> is what we write; a model trained elsewhere may add one more
        # or write its JSON on its own line, which parses the same.
        r'start: tag_think think tag_think_end NL action',
        r"NL: /\n{0,2}/",
        r"NL1: /\n?/",
        rf"think[max_tokens={THINK_TOKENS}]: /[^<]*/",
        *_string("text", QUERY_TOKENS, f"/{_CHAR}+/"),
        r'top_k: ", \"top_k\": " /[1-9]/',
    ]
    for i, tool in enumerate(dict.fromkeys(rules.tools)):
        head = "tag_tool_call NL1 " + _lit(f'{{"name": {json.dumps(tool, ensure_ascii=False)}, "arguments": ')
        if tool == "search":
            body = r'"{\"queries\": [" text (", " text)~0..2 "]" top_k? "}"'
        elif tool == "image_search":
            body = r'"{\"query\": " text top_k? "}"'
        elif tool == "query_knowledge" and rules.skills:
            skills = " | ".join(_lit(json.dumps(s, ensure_ascii=False)) for s in rules.skills)
            body = rf'"{{\"skill_name\": " ({skills}) "}}"'
        else:  # a tool we know no shape for: any JSON object
            body = '%json{"type": "object"}'
        lines.append(f'call_{i}: {head} {body} "}}" NL1 tag_tool_call_end')
        actions.append(f"call_{i}")
    if rules.answer_only:
        actions = ["answer"]
    lines.insert(1, "action: " + " | ".join(actions))

    ids = list(dict.fromkeys(rules.image_ids))
    k = min(rules.max_references, len(ids))
    ordered = sorted(ids, key=id_number)
    # The lists of m references: distinct shown ids, sorted, for m up to k.
    by_length = {m: ['"[" ' + ' ", " '.join(f"ref_{a}" for a in pick) + ' "]"' if pick else '"[]"'
                     for pick in itertools.combinations(range(len(ordered)), m)] for m in range(k + 1)}
    for a, img_id in enumerate(ordered if k else []):
        lines.append(f'ref_{a}: {_lit("{" + json.dumps("img_id") + ": " + json.dumps(img_id) + ", " + json.dumps("note") + ": ")} note "}}"')
    # A prompt that cites the n-th reference binds at least n: "the first reference image" with an
    # empty list points the renderer at a picture it never gets. The prompt comes before the list,
    # so the answer is one branch per n: a prompt citing nothing past the n-th, then a list of n or more.
    # (A student that copied "the rocket from the first image" bound nothing and, corrected, wrote
    # the same answer again; under this rule the list it writes holds the user's picture.)
    branches = []
    for n in range(k + 1):
        lines += [f"refs_{n}: " + " | ".join(alt for m in range(n, k + 1) for alt in by_length[m]),
                  *_string(f"gen_prompt_{n}", GEN_PROMPT_TOKENS, f"GEN_PROMPT_{n}"),
                  f"GEN_PROMPT_{n}: /{_CHAR}+/ & ~{_forbidden_in_prompt(n)}"]
        branches.append(f'gen_prompt_{n} ", \\"reference_images\\": " refs_{n}')
    lines += [
        *_string("note", NOTE_TOKENS, f"/{_CHAR}*/"),
        'answer: tag_answer NL1 "{\\"gen_prompt\\": " answer_body "}" NL1 tag_answer_end',
        "answer_body: " + " | ".join(branches),
    ]
    for tag in TAGS:
        for name, text in ((f"tag_{tag}", f"<{tag}>"), (f"tag_{tag}_end", f"</{tag}>")):
            lines.append(f"{name}: {_lit(text)}" + (f" | {text}" if text in token_tags else ""))
    return "\n".join(lines) + "\n"


class GrammarError(RuntimeError):
    """The grammar could not be built or the decoder left it (a bug, never the model's fault)."""


class TurnGrammar:
    """llguidance for one tokenizer: compiles ``TurnRules`` into matchers (cached per rules)."""

    def __init__(self, tokenizer, vocab_size: int, eos_ids=()):
        try:
            import llguidance
            import llguidance.hf
        except ImportError as exc:  # pragma: no cover - a requirement; the message says how to fix it
            raise GrammarError("constrained decoding needs llguidance: pip install 'llguidance>=1.0'") from exc
        self._llg = llguidance
        eos = list(eos_ids) or None
        # The model's logits may be wider than the tokenizer (padding rows) or, in tiny test
        # models, narrower; llguidance needs room for every token the tokenizer has.
        vocab_size = max(vocab_size, len(tokenizer))
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size,
                                                      eos_token=eos[0] if eos and len(eos) == 1 else eos)
        self.vocab_size = vocab_size
        added = {getattr(t, "content", str(t)) for t in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).values()}
        self.token_tags = frozenset(f"<{s}{t}>" for t in TAGS for s in ("", "/")) & added
        self._grammars: dict[TurnRules, str] = {}

    def matcher(self, rules: TurnRules):
        grammar = self._grammars.get(rules)
        if grammar is None:
            grammar = self._llg.LLMatcher.grammar_from_lark(turn_grammar(rules, self.token_tags))
            problem = self._llg.LLMatcher.validate_grammar(grammar, self.tokenizer)
            if problem:
                raise GrammarError(f"the turn grammar does not compile: {problem}")
            if len(self._grammars) > 64:
                self._grammars.clear()
            self._grammars[rules] = grammar
        m = self._llg.LLMatcher(self.tokenizer, grammar, log_level=0)
        if m.is_error():
            raise GrammarError(f"the turn grammar does not compile: {m.get_error()}")
        return m

    def processor(self, rules: TurnRules, rows: int, prompt_len: int, drafts: int = 0) -> "GrammarProcessor":
        return GrammarProcessor([self.matcher(rules) for _ in range(rows)], self.vocab_size, prompt_len, drafts)


class GrammarProcessor:
    """A transformers logits processor: each row's next token must continue its grammar.

    It brings each row's matcher to the row's tokens so far, then sets every token the grammar
    does not allow to -inf. ``error`` holds the first matcher error, if any (then that row is left
    unconstrained rather than stuck).

    The matcher follows the tokens it is shown, not one token per call: prompt-lookup decoding
    (``drafts`` > 0) asks for the logits of every drafted position in one go, each call one token
    longer, and the next round's tokens may part from the draft. llguidance cannot roll back past
    a capped lexeme, so with drafts each row keeps a copy of its matcher after each of its last
    tokens and goes on from the copy where the shown tokens part from its path. A drafted token the
    grammar refuses is not consumed (no position after it can be accepted), so that row's later
    positions of the draft are left unmasked.
    """

    def __init__(self, matchers: list, vocab_size: int, prompt_len: int, drafts: int = 0):
        import torch

        self.matchers = matchers
        self.drafts = drafts
        self.prompt_len = prompt_len
        self.vocab_size = vocab_size
        words = (vocab_size + 31) // 32
        self.bitmask = torch.full((len(matchers), words), -1, dtype=torch.int32)
        self._shifts = torch.arange(32, dtype=torch.int32)
        self.error: str | None = None
        self.mask_s = 0.0  # time spent computing and applying masks (for the benchmark)
        # Steps where the model's own first choice was not allowed: how hard the grammar had to steer.
        self.interventions = 0
        self.steps = 0
        self._path: list[list[int]] = [[] for _ in matchers]  # the tokens each row's matcher has consumed
        # With drafts: the row's matcher after each of the last tokens of its path (the last is current),
        # and how many tokens of the path come before the first copy kept.
        self._copies: list[list] = [[m] for m in matchers]
        self._first: list[int] = [0 for _ in matchers]

    def __call__(self, input_ids, scores):
        import time

        import torch
        from llguidance.torch import fill_next_token_bitmask

        t0 = time.perf_counter()
        for row in range(len(self.matchers)):
            following = self._follow(row, input_ids[row, self.prompt_len:].tolist())
            m = self.matchers[row]
            if following and not m.is_error():
                fill_next_token_bitmask(m, self.bitmask, row)
            if m.is_error():  # a grammar bug or a lexer limit, never the model's doing
                self.error = self.error or m.get_error().splitlines()[0]
            if m.is_error() or not following:
                self.bitmask[row] = -1  # every token allowed: an error's row goes on unconstrained
        allowed = ((self.bitmask.unsqueeze(-1) >> self._shifts) & 1).bool().reshape(len(self.matchers), -1)
        vocab = scores.shape[-1]
        allowed = allowed[:, :vocab].to(scores.device)
        if allowed.shape[1] < vocab:  # ids past the tokenizer's vocabulary are never allowed
            allowed = torch.cat([allowed, allowed.new_zeros(allowed.shape[0], vocab - allowed.shape[1])], dim=1)
        top = scores.argmax(dim=-1, keepdim=True)
        self.interventions += int((~allowed.gather(1, top)).sum())
        self.steps += scores.shape[0]
        scores = scores.masked_fill(~allowed, float("-inf"))
        self.mask_s += time.perf_counter() - t0
        return scores

    def _follow(self, row: int, tokens: list[int]) -> bool:
        """Bring the row's matcher (``self.matchers[row]``) to ``tokens``, the row's completion so
        far; False when a token on the way is one the grammar refuses (only a drafted one can be)."""
        path = self._path[row]
        same = len(path) if tokens[:len(path)] == path else 0  # the usual step: one token more
        while same < min(len(path), len(tokens)) and path[same] == tokens[same]:
            same += 1
        if same < len(path):  # a draft was cut short: go on from the copy at the parting point
            copies, first = self._copies[row], self._first[row]
            if same < first:
                raise GrammarError("a draft parted from the turn further back than the matcher copies kept")
            del copies[same - first + 1:]
            del path[same:]
            self.matchers[row] = copies[-1]
        matcher = self.matchers[row]
        for token in tokens[same:]:
            if matcher.is_stopped() or matcher.is_error():
                break
            if self.drafts and matcher.validate_tokens([token]) != 1:
                return False
            if self.drafts:  # keep the state before this token; consume on a copy
                matcher = matcher.deep_copy()
            matcher.consume_token(token)
            path.append(token)
            if self.drafts:
                self._copies[row].append(matcher)
                self.matchers[row] = matcher
        extra = len(self._copies[row]) - (self.drafts + 2)
        if self.drafts and extra > 0:  # a draft never reaches back further than its own length
            del self._copies[row][:extra]
            self._first[row] += extra
        return True
