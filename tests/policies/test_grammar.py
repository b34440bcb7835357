"""Constrained decoding (genevolve.policies.grammar) and the answer step's gen_prompt check.

The grammar is checked on a real tokenizer (the tiny one of tests/helpers/tiny_models.py, protocol tags as
added tokens) and on a tiny *random* model sampling at temperature 1: whatever the weights say, a
turn generated under the grammar parses, while the same model unconstrained does not.
"""

from __future__ import annotations

import pytest

from genevolve.agent import Agent, AgentConfig
from genevolve.policies.base import PolicyError
from genevolve.policies.grammar import TurnRules, turn_rules
from genevolve.protocol import (format_answer, gen_prompt_problems, parse_turn, with_request_constraints,
                                with_request_quotes, without_reasoning)

torch = pytest.importorskip("torch")
pytest.importorskip("llguidance")

ALL_TOOLS = ("search", "image_search", "query_knowledge")
SKILLS = ("spatial_layout", "text_rendering")


@pytest.fixture(scope="module")
def tiny_grammar(tiny_gemma_path):  # noqa: F811 - the session fixture of tests/conftest.py
    from transformers import AutoTokenizer

    from genevolve.policies.grammar import TurnGrammar

    tok = AutoTokenizer.from_pretrained(tiny_gemma_path)
    return tok, TurnGrammar(tok, len(tok), [tok.eos_token_id])


def _accepts(tiny_grammar, rules: TurnRules, text: str) -> bool:
    tok, grammar = tiny_grammar
    matcher = grammar.matcher(rules)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return matcher.try_consume_tokens(ids) == len(ids) and matcher.is_accepting()


CALL = '<think>{}</think>\n<tool_call>{{"name": "{}", "arguments": {}}}</tool_call>'
ANSWER = '<think>ok</think>\n<answer>{{"gen_prompt": "{}", "reference_images": {}}}</answer>'
REF = '{{"img_id": "{}", "note": "{}"}}'


def test_grammar_accepts_the_protocol_and_refuses_what_the_state_forbids(tiny_grammar):
    shown_two = TurnRules(tools=ALL_TOOLS, skills=SKILLS, image_ids=("IMG_002", "IMG_001"))
    none_shown = TurnRules(tools=ALL_TOOLS, skills=SKILLS)
    ok = [
        (none_shown, CALL.format("look it up", "search", '{"queries": ["Eiffel Tower", "Paris"], "top_k": 3}')),
        (none_shown, CALL.format("", "image_search", '{"query": "a red fox"}')),
        (none_shown, CALL.format("skill", "query_knowledge", '{"skill_name": "text_rendering"}')),
        (none_shown, ANSWER.format('a sign reading \\"OPEN\\"', "[]")),
        (shown_two, ANSWER.format("a fox as in the second reference image",
                                  f'[{REF.format("IMG_001", "")}, {REF.format("IMG_002", "fur")}]')),
        (shown_two, ANSWER.format("the rocket from the first image, as a poster", f'[{REF.format("IMG_002", "")}]')),
        (shown_two, ANSWER.format("a fox in the snow", "[]")),  # citing nothing, binding nothing
    ]
    for rules, text in ok:
        assert parse_turn(text).kind != "error", text
        assert _accepts(tiny_grammar, rules, text), text
    refused = [
        (none_shown, ANSWER.format("a fox like the first reference image", "[]")),  # no image was shown
        (none_shown, ANSWER.format("a fox like The Reference Photo", "[]")),
        (shown_two, ANSWER.format("a fox like the third reference image", "[]")),  # only two can be cited
        (shown_two, ANSWER.format("a fox", f'[{REF.format("IMG_002", "")}, {REF.format("IMG_001", "")}]')),  # unsorted
        (shown_two, ANSWER.format("a fox", f'[{REF.format("IMG_007", "")}]')),  # never shown
        # a picture shown, then cited, must be bound: "the first" needs one in the list, "the second" two
        (shown_two, ANSWER.format("the rocket from the first image, as a poster", "[]")),
        (shown_two, ANSWER.format("a fox like the first reference image", "[]")),
        (shown_two, ANSWER.format("a fox like the second reference image", f'[{REF.format("IMG_001", "")}]')),
        (shown_two, ANSWER.format("a fox like The Reference Image", "[]")),
        (none_shown, ANSWER.format("a fox, see IMG_001 or https://x.org", "[]")),
        (none_shown, ANSWER.format("a fox</answer>", "[]")),  # no tag inside a string
        (none_shown, CALL.format("x", "query_knowledge", '{"skill_name": "drawing_tips"}')),  # no such skill
        (none_shown, CALL.format("x", "browse", '{"url": "x"}')),  # no such tool
        (TurnRules(skills=SKILLS), CALL.format("x", "search", '{"queries": ["fox"]}')),  # an answer is due
        (none_shown, "<think>x</think>\n<answer>a fox in prose</answer>"),
    ]
    for rules, text in refused:
        assert not _accepts(tiny_grammar, rules, text), text


def test_turn_rules_come_from_the_agent_state():
    rules = turn_rules({"search": object(), "query_knowledge": object()}, ["IMG_001", None], answer_only=False)
    assert rules.tools == ("search", "query_knowledge") and "quantity_counting" in rules.skills
    assert rules.image_ids == ("IMG_001",)
    assert turn_rules(None, [], answer_only=True).answer_only


def _random_turns(path, constrained: bool, rules_list, lookup: int = 0):
    from genevolve.policies import make_policy

    policy = make_policy(f"hf:{path}?temperature=1&grammar={int(constrained)}&lookup={lookup}", dtype=torch.float32)
    messages = [{"role": "system", "content": "Plan an image."}, {"role": "user", "content": "a fox"}]
    out = []
    for seed, rules in enumerate(rules_list):
        torch.manual_seed(seed)
        policy.prepare_turn(rules)
        out.append(("".join(policy.stream(messages)), policy.last_stats))
        assert policy.last_grammar_error is None
    return out


SEARCHED = [
    {"role": "system", "content": "Plan an image."},
    {"role": "user", "content": "A black fox beside the vase of the first image.\n\n"
                                "The user provided reference images: IMG_001 (vase.jpg)."},
    {"role": "assistant", "content": '<think>A fox.</think>\n<tool_call>{"name": "image_search", '
                                     '"arguments": {"query": "fox"}}</tool_call>'},
    {"role": "user", "content": '<tool_response>\nImages for "fox":\nIMG_002: Red fox in snow\n'
                                'IMG_003: Black fox on a log\nIMG_001: vase\n</tool_response>'},
]


def test_verdict_binds_lets_an_answer_bind_only_what_the_models_verdict_bound(tiny_grammar):
    """``verdict_binds``: a searched picture is bindable once the model's own turn said "IMG_### shows
    …, so I bind it."; the user's picture always is, even when a search lists it again; one its
    verdict passed over never is."""
    from genevolve.policies.grammar import held_to_verdicts

    rules = turn_rules(None, ["IMG_001", "IMG_002", "IMG_003"], user_ids=["IMG_001"], answer_only=True)
    assert held_to_verdicts(rules, SEARCHED).image_ids == ("IMG_001",)
    verdict = {"role": "assistant", "content": "<think>IMG_003 shows fox, so I bind it. I have what I need."}
    held = held_to_verdicts(rules, SEARCHED + [verdict])
    assert held.image_ids == ("IMG_001", "IMG_003")
    passed_over = ANSWER.format("a fox", f'[{REF.format("IMG_002", "")}]')
    assert _accepts(tiny_grammar, rules, passed_over) and not _accepts(tiny_grammar, held, passed_over)
    assert _accepts(tiny_grammar, held, ANSWER.format("a fox", f'[{REF.format("IMG_001", "")}, {REF.format("IMG_003", "")}]'))


def test_bind_matching_lets_an_answer_bind_only_the_user_pictures_and_matching_ones(tiny_grammar):
    from genevolve.policies.grammar import held_to_matches

    rules = turn_rules(None, ["IMG_001", "IMG_002", "IMG_003"], user_ids=["IMG_001"], matching_ids=["IMG_003"],
                       answer_only=True)
    held = held_to_matches(rules)
    assert held.image_ids == ("IMG_001", "IMG_003")
    other = ANSWER.format("a fox", f'[{REF.format("IMG_002", "")}]')
    assert _accepts(tiny_grammar, rules, other) and not _accepts(tiny_grammar, held, other)
    assert held_to_matches(turn_rules(None, ["IMG_002"], answer_only=True)).image_ids == ()


def test_the_verdict_binds_option_holds_a_sampling_model_to_its_verdict(tiny_gemma_path, monkeypatch):  # noqa: F811
    """The spec options reach the turn: the grammar a turn decodes under lets it bind the searched
    pictures without verdict_binds and only those the model gave a verdict for with it (none here),
    and a random model sampling under it never binds another; under bind_matching, the user's
    picture and the matching one."""
    from genevolve.policies import make_policy
    from genevolve.policies.grammar import TurnGrammar

    decoded_under = []  # the rules each turn's grammar was built from (the real processor still runs)
    real_processor = TurnGrammar.processor
    monkeypatch.setattr(TurnGrammar, "processor",
                        lambda self, rules, **kw: decoded_under.append(rules) or real_processor(self, rules, **kw))

    def bound(option: int, more: str = "", matching_ids=()) -> tuple[set[str], set[str]]:
        """(what the sampled answers bound, what their grammar allowed), over six seeds."""
        policy = make_policy(f"hf:{tiny_gemma_path}?temperature=1&verdict_binds={option}{more}", dtype=torch.float32)
        ids, allowed = set(), set()
        for seed in range(6):
            torch.manual_seed(seed)
            policy.prepare_turn(turn_rules(None, ["IMG_001", "IMG_002", "IMG_003"], user_ids=["IMG_001"],
                                           matching_ids=matching_ids, answer_only=True))
            answer = parse_turn("".join(policy.stream(SEARCHED))).answer
            ids.update(r["img_id"] for r in answer["reference_images"])
            allowed.update(decoded_under.pop().image_ids)
        return ids, allowed

    # Whether a random model binds anything at all is its draw (its tokenizer is trained on this
    # repository's text), so the options are read off the grammar and the samples are held to it.
    sampled, allowed = bound(1)
    assert allowed == {"IMG_001"} and sampled <= allowed
    sampled, allowed = bound(0)
    assert allowed == {"IMG_001", "IMG_002", "IMG_003"} and sampled <= allowed
    sampled, allowed = bound(0, "&bind_matching=1", matching_ids=["IMG_003"])
    assert allowed == {"IMG_001", "IMG_003"} and sampled <= allowed
    # Without the grammar either option could do nothing: refused, with what to change.
    for option in ("verdict_binds", "bind_matching"):
        with pytest.raises(PolicyError, match=f"{option}=1 works through the turn grammar.*drop grammar=0"):
            make_policy(f"hf:{tiny_gemma_path}?{option}=1&grammar=0", dtype=torch.float32)


@pytest.mark.timeout(900)
def test_a_random_model_under_the_grammar_always_writes_a_turn_that_parses(tiny_gemma_path):  # noqa: F811
    rules_list = [turn_rules(None, []), turn_rules(None, ["IMG_001", "IMG_002"]),
                  turn_rules(None, ["IMG_001"], answer_only=True)]
    turns = []
    for text, stats in _random_turns(tiny_gemma_path, True, rules_list):
        turns.append(parse_turn(text))
        assert stats["constrained"] and turns[-1].kind != "error", (turns[-1].error, text)
        if turns[-1].kind == "tool_call":
            assert turns[-1].tool_call.name in ALL_TOOLS
    # The answer-only turn is an answer, with no ordinal past the one image shown.
    assert turns[2].kind == "answer" and "second reference" not in turns[2].answer["gen_prompt"].lower()
    # Sampling with drafts (each drafted position sampled, the draft cut where a sample parts from
    # it, the grammar's matcher rolled back there): the turns parse all the same.
    for text, stats in _random_turns(tiny_gemma_path, True, rules_list, lookup=6):
        assert stats["constrained"] and parse_turn(text).kind != "error", text
    # Unconstrained, the same random weights do not speak the protocol: the test above is not vacuous.
    # (The lenient parser may still find a "{}" in its noise after an "<answer>": no program.)
    free = _random_turns(tiny_gemma_path, False, rules_list[:1])
    loose = parse_turn(free[0][0])
    assert not free[0][1]["constrained"]
    assert loose.kind == "error" or (loose.kind == "answer" and not (loose.answer or {}).get("gen_prompt")) \
        or (loose.kind == "tool_call" and loose.tool_call.name not in ALL_TOOLS), free[0][0]


# ---------------------------------------------------------------- the gen_prompt check


def test_gen_prompt_check_finds_lost_quotes_counts_positions_in_any_quote_style():
    request = ("A shop window with \u201cOPEN LATE\u201d on a sign and 'Rare Maps' on a card, "
               "three cats to the left of a lamp.")
    assert gen_prompt_problems(request, 'A shop window, sign "OPEN LATE", card "Rare Maps", three cats to the left '
                                        "of a lamp, warm light.") == []
    problems = gen_prompt_problems(request, "A shop window at night with cats.")
    text = " | ".join(problems)
    assert '"OPEN LATE"' in text and '"Rare Maps"' in text
    assert "3 cats" in text and "cats left of lamp" in text


def test_gen_prompt_check_finds_reasoning_and_protocol_words():
    leaked = ("A still life of a rusty anchor. so I have what I need: 0 fact(s), 0 reference image(s) and the "
              "physical_material_consistency guidance.")
    problems = gen_prompt_problems("A still life of a rusty anchor.", leaked)
    assert len(problems) == 1 and '"(s)"' in problems[0] and "physical_material_consistency" in problems[0]
    think = "The anchor should look heavy and wet from the sea spray"
    copied = gen_prompt_problems("A rusty anchor.", "A rusty anchor; the anchor should look heavy and wet from the sea.",
                                 think=think)
    assert copied and "the anchor should look heavy and wet" in copied[0]
    # What the user quoted is theirs to print, whatever it says.
    assert gen_prompt_problems('A T-shirt reading "I need coffee"', 'A T-shirt reading "I need coffee".') == []
    assert gen_prompt_problems('A cartoon of a dog saying "I see what you did there"',
                               'A cartoon of a dog saying "I see what you did there".') == []
    # An SFT adapter's answer on PartiPrompts' "a motorcycle": talk about the request, not an image.
    talk = gen_prompt_problems("a motorcycle", "Based on the subject, look and identity of the request, I see the "
                                               "request to the classic road motorcycle. Match the appearance.")
    assert len(talk) == 1 and "the request" in talk[0] and "I see" in talk[0], talk


class _Scripted:
    name = "scripted"

    def __init__(self, turns):
        self.turns, self.seen = list(turns), []

    def stream(self, messages, images=()):
        self.seen.append([dict(m) for m in messages])
        yield self.turns.pop(0)


def test_the_answer_step_sends_one_correction_that_names_what_is_missing(tmp_path):
    request = 'A bookshop sign reading "OPEN LATE" and a card saying "Rare Maps Inside".'
    lossy = format_answer({"gen_prompt": 'A bookshop sign reading "OPEN LATE". so I have what I need: 0 fact(s).',
                           "reference_images": []}, think="so I have what I need")
    fixed = format_answer({"gen_prompt": 'A bookshop sign reading "OPEN LATE" and a card saying "Rare Maps Inside".',
                           "reference_images": []})
    policy = _Scripted([lossy, fixed])
    traj = Agent(policy, [], AgentConfig(), work_dir=tmp_path).run(request)
    assert traj.termination == "answer" and traj.program.gen_prompt.endswith('"Rare Maps Inside".')
    correction = policy.seen[1][-1]["content"]
    assert '"Rare Maps Inside"' in correction and "what I need" in correction and "OPEN LATE" not in correction
    # A second failing answer is kept (a program beats none), with a warning that says what is wrong.
    policy = _Scripted([lossy, lossy])
    traj = Agent(policy, [], AgentConfig(), work_dir=tmp_path).run(request)
    assert traj.program is not None and [s.kind for s in traj.steps] == ["format_error", "answer"]
    assert any("Rare Maps Inside" in w for w in traj.warnings)
    # ...and reaches the renderer without the model's talk about its own work, with every quoted text.
    assert traj.program.gen_prompt == ('A bookshop sign reading "OPEN LATE". The text "Rare Maps Inside" appears '
                                       'exactly as written.')
    assert any(w.startswith("program cleaned:") and "what I need" in w for w in traj.warnings)
    assert 'program repaired: added the quoted text "Rare Maps Inside"' in traj.warnings
    # GRPO's rollouts keep what the model wrote, so their reward sees it.
    policy = _Scripted([lossy, lossy])
    traj = Agent(policy, [], AgentConfig(tidy_kept_prompt=False), work_dir=tmp_path).run(request)
    assert traj.program.gen_prompt.endswith("so I have what I need: 0 fact(s).")


def test_a_layout_line_that_places_things_nobody_named_is_sent_back_once_then_cut(tmp_path):
    """The SFT adapter of 2026-12-07 wrote the spatial_layout line on five of 36 public requests
    with an object of its own ("Layout: place the black backpack next to the table." on GenEval's
    "a photo of a black backpack"); a description that sets a scene is the writer's to give."""
    from genevolve.program import misplaced_layout

    request = "a photo of three sinks"
    invented = ("A photo of three sinks. Layout: place the sink next to the table. Keep every object fully in "
                "frame with clear separation. High detail.")
    assert misplaced_layout(invented, request) == ["sink next to table"]
    assert any("never names (sink next to table)" in p for p in gen_prompt_problems(request, invented))
    # The request's own layout, a layout line with no placement, and a scene: none is a problem.
    assert misplaced_layout("A vase right of a horse. Layout: place the vase right of the horse.",
                            "a vase right of a horse") == []
    assert misplaced_layout("Three sinks. Layout: Keep every object fully in frame.", request) == []
    assert misplaced_layout("A kite over a green hill, beside an old oak.", "a kite") == []
    policy = _Scripted([format_answer({"gen_prompt": invented, "reference_images": []})] * 2)
    traj = Agent(policy, [], AgentConfig(), work_dir=tmp_path).run(request)
    assert [s.kind for s in traj.steps] == ["format_error", "answer"]
    assert "never names (sink next to table)" in policy.seen[1][-1]["content"]
    # Kept after its correction: the sentence goes, the rest of the brief stays.
    assert traj.program.gen_prompt == ("A photo of three sinks. Keep every object fully in frame with clear "
                                       "separation. High detail.")
    assert any(w.startswith("program cleaned:") and "next to the table" in w for w in traj.warnings)


def test_a_kept_program_that_lost_a_position_or_count_gets_the_requests_own_words(tmp_path):
    """After its correction failed, a program that dropped the request's position or count reaches the
    renderer with the request's sentence as its description (the shipped adapter wrote "A photo of
    toothbrush." for GenEval 0398 twice, 2026-12-07)."""
    request = "a photo of a toothbrush below a pizza"
    lossy = format_answer({"gen_prompt": "A photo of toothbrush will anchor its appearance better than words. High "
                                         "detail, coherent single image.", "reference_images": []})
    policy = _Scripted([lossy, lossy])
    traj = Agent(policy, [], AgentConfig(), work_dir=tmp_path).run(request)
    assert "toothbrush below pizza" in policy.seen[1][-1]["content"]  # the correction came first
    assert traj.program.gen_prompt == "A photo of a toothbrush below a pizza. High detail, coherent single image."
    assert any("request's own words" in w and "toothbrush below pizza" in w for w in traj.warnings)
    # A first sentence with words of its own stays, after the request's; a count is restored the same way.
    assert with_request_constraints(request, "A bright bathroom with a blue toothbrush on a shelf. Soft light.") == (
        "A photo of a toothbrush below a pizza. A bright bathroom with a blue toothbrush on a shelf. Soft light.",
        ["pizza", "toothbrush below pizza"])
    assert with_request_constraints("three cats on a sofa", "A picture of cat. Warm light.") == (
        "Three cats on a sofa. Warm light.", ["3 cats"])
    kept = "Three cats on a sofa, warm light."
    assert with_request_constraints("three cats on a sofa", kept) == (kept, [])
    # A lost subject too: /tmp/g10's GRPO adapter dropped the robot of PartiPrompts 1577.
    request = 'a robot holding a sign with "Let\'s PAINT!" written on it'
    robotless = "A sign with 'Let's PAINT!' written on it will attract the right people to it. High detail."
    assert gen_prompt_problems(request, robotless) == ["it must show what the request shows: robot"]
    assert with_request_constraints(request, robotless) == (
        'A robot holding a sign with "Let\'s PAINT!" written on it. ' + robotless, ["robot"])
    # The request comes back without the words around it, and an ordinal is no subject to lose.
    assert with_request_constraints("hey, can I get a robot holding a sign? thanks", "A sign. Soft light.") == (
        "A robot holding a sign. Soft light.", ["robot"])
    request = "pls reimagine the astronaut from the first image as a tiny clay figurine"
    assert gen_prompt_problems(request, "The astronaut of the reference image as a tiny clay figurine.") == []
    # GRPO's rollouts keep what the model wrote.
    traj = Agent(_Scripted([lossy, lossy]), [], AgentConfig(tidy_kept_prompt=False), work_dir=tmp_path).run(request)
    assert traj.program.gen_prompt.startswith("A photo of toothbrush will anchor")
    # Once the request's sentence leads, the model's first sentence is checked like the others: the
    # /tmp/d4 SFT's "A cake will have exactly 2 people…" for GenEval 0001 stayed whole behind it.
    caked = format_answer({"gen_prompt": "A cake will have exactly 2 people, each one fully visible. High detail, "
                                         "coherent single image.", "reference_images": []})
    traj = Agent(_Scripted([caked, caked]), [], AgentConfig(), work_dir=tmp_path).run("a photo of a bench")
    assert traj.program.gen_prompt == "A photo of a bench. High detail, coherent single image."


def test_the_answer_step_checks_facts_against_what_the_run_searched(tmp_path):
    """A "fact" with no search behind it gets the correction, and is dropped when the answer keeps it."""
    request = "a photo of a cat"
    claimed = format_answer({"gen_prompt": "A photo of a cat. Facts to respect: The cat is a mammal, not reptile.",
                             "reference_images": []})
    policy = _Scripted([claimed, claimed])
    traj = Agent(policy, [], AgentConfig(), work_dir=tmp_path).run(request)
    assert "only what a search result said" in policy.seen[1][-1]["content"]
    assert traj.program.gen_prompt == "A photo of a cat."
    assert any(w.startswith("program cleaned:") and "mammal" in w for w in traj.warnings)
    # Also after a line break and tabs, as the shipped adapter wrote it on PartiPrompts' "cash on a wooden table".
    request = "cash on a wooden table"
    claimed = format_answer({"gen_prompt": "Cash on a wooden table\n\t\t\tFacts to respect: The wooden table is "
                                           "real, solid wood, not fake or plastic.", "reference_images": []})
    traj = Agent(_Scripted([claimed, claimed]), [], AgentConfig(), work_dir=tmp_path / "tabs").run(request)
    assert traj.program.gen_prompt == "Cash on a wooden table"


def test_the_answer_step_drops_facts_about_what_the_request_does_not_name_and_colours_nobody_gave(tmp_path):
    """The reward's relevance and colour tests at the answer: one correction, then the kept program
    loses those sentences. Both from a fresh SFT adapter on PartiPrompts, with the real offline search:
    "Mars" finds the Eiffel Tower on the Champ de Mars, and a binding line gave a robot red arms."""
    from genevolve.config import EXAMPLES
    from genevolve.protocol import format_tool_call
    from genevolve.tools import search

    tools = {"search": search.SearchTool(search.LocalCorpus(EXAMPLES / "corpus"))}
    request = "Mars rises on the horizon."
    pasted = format_answer({"gen_prompt": (
        "Mars rises on the horizon. The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in "
        "Paris, France. High detail, no watermark."), "reference_images": []})
    policy = _Scripted([format_tool_call("search", {"queries": ["Mars"], "top_k": 3}), pasted, pasted])
    traj = Agent(policy, tools, AgentConfig(), work_dir=tmp_path / "mars").run(request)
    assert "Eiffel Tower" in traj.steps[0].tool_text  # the corpus does answer with the tower
    correction = policy.seen[2][-1]["content"]
    assert "only facts about what the request names" in correction and "Eiffel Tower" in correction
    assert traj.program.gen_prompt == "Mars rises on the horizon. High detail, no watermark."
    assert any(w.startswith("program cleaned:") and "Eiffel" in w for w in traj.warnings)
    # The same answer without the search: no facts were carried, so nothing is said about them.
    assert gen_prompt_problems(request, "Mars rises on the horizon. High detail.", off_request=[]) == []

    request = "a robot waving hello"
    coloured = format_answer({"gen_prompt": "A robot waving hello. The robot is red. Soft studio light.",
                              "reference_images": []})
    policy = _Scripted([coloured, coloured])
    traj = Agent(policy, {}, AgentConfig(), work_dir=tmp_path / "robot").run(request)
    assert "colours the request never gave (red robot)" in policy.seen[1][-1]["content"]
    assert traj.program.gen_prompt == "A robot waving hello. Soft studio light."
    # A colour the request gave, or research gave, is no problem.
    from genevolve.relevance import invented_colours

    def colours(request, grounds=()):
        return lambda text: invented_colours(text, request, grounds)

    assert gen_prompt_problems("a red robot waving", "A red robot waving. The robot is red.",
                               colours_nobody_gave=colours("a red robot waving")) == []
    assert gen_prompt_problems(request, "A robot waving hello. The robot is red.",
                               colours_nobody_gave=colours(request, ["Robot. The robot is red and white."])) == []
    # GRPO's rollouts keep what the model wrote; its reward costs the colour.
    traj = Agent(_Scripted([coloured, coloured]), {}, AgentConfig(tidy_kept_prompt=False),
                 work_dir=tmp_path / "rollout").run(request)
    assert "The robot is red." in traj.program.gen_prompt


def test_the_runtimes_own_words_in_a_program_are_a_leak_and_leave_it():
    """GRPO from the fresh SFT (2026-12-07) repeated the correction it was sent into its programs on
    held-out requests that give a picture; the eval counted them clean of leaks."""
    from genevolve.program import reasoning_leaks

    request = ("A chess knight whose whole surface is covered in the loose gravel texture of the first image, "
               "in soft overcast light.")
    echoed = request + " Your last turn could not be used: 'reference style' but only are given. High detail."
    assert "Your last turn could not be used" in reasoning_leaks(echoed, request)
    assert without_reasoning(request, echoed) == (
        request + " High detail.", ["Your last turn could not be used: 'reference style' but only are given."])
    request = "Could you reimagine the wall clock from the first image as a botanical illustration?"
    echoed = request + " The user's last turn has not yet been used; write the program now. Soft light."
    assert without_reasoning(request, echoed)[0] == request + " Soft light."
    # A request may say it itself: then it is the user's.
    assert reasoning_leaks("A poster that reads: write the program now.", "a poster: write the program now") == []


def test_every_message_the_runtime_sends_the_model_is_caught_when_a_program_repeats_it():
    """The leak check is built from the phrases the messages are built from: each message the model
    can be sent, repeated in a program, leaves it; a message reworded in one place rewords both."""
    from genevolve.program import RUNTIME_PHRASES, reasoning_leaks
    from genevolve.protocol import FINAL_ROUND_MESSAGE, correction_message, prompt_correction_message

    request = "a red kite over a green field"
    sent = [FINAL_ROUND_MESSAGE, correction_message("no <answer> block"),
            prompt_correction_message(['it must contain the quoted text "OPEN" exactly as written'])]
    for message in sent:
        words = message.split("<")[0].strip().removesuffix(" as") + "."  # the words before the markup
        echoed = f"A red kite over a green field. {words} Soft light."
        assert reasoning_leaks(echoed, request), message
        cleaned = without_reasoning(request, echoed)[0]
        assert cleaned.startswith("A red kite over a green field.") and cleaned.endswith("Soft light.")
        assert not reasoning_leaks(cleaned, request), cleaned
    for phrase in RUNTIME_PHRASES:  # any case, any spacing
        assert reasoning_leaks(f"A kite. {phrase.upper().replace(' ', '  ')}.", request), phrase
        assert any(phrase in m for m in sent), f"{phrase!r} is in no message the runtime sends"


def test_reasoning_is_cut_out_of_a_kept_prompt_and_the_users_words_stay():
    request = "a photo of a black backpack"
    cleaned, removed = without_reasoning(
        request, "A photo of a black backpack will anchor its appearance better than words. Layout: follow the "
                 "spatial_layout guidance, every object in frame.\n\nSo I have what I need. Soft daylight.")
    assert cleaned == "A photo of a black backpack. Layout: follow, every object in frame.\n\nSoft daylight."
    assert removed[:2] == ["will anchor its appearance", "better than words"] and "So I have what I need." in removed
    # Quoted text is the user's: a quoted protocol word stays, and the sentence holding it is not dropped.
    request = 'A T-shirt that says "I have spatial_layout"'
    assert without_reasoning(request, 'A T-shirt that says "I have spatial_layout". Studio light.') == (
        'A T-shirt that says "I have spatial_layout". Studio light.', [])
    # A quote the request never had is the model's: reasoning in it is a leak, and its sentence goes
    # (nano wrote this on PartiPrompts 0908).
    request = "A marina without any boats in it."
    leaky = ('A marina without any boats in it. Render the text "A marina without any boats in it will anchor its '
             'appearance better than words". Soft morning light.')
    assert any("will anchor its appearance" in p for p in gen_prompt_problems(request, leaky))
    assert without_reasoning(request, leaky) == (
        "A marina without any boats in it. Soft morning light.",
        ['Render the text "A marina without any boats in it will anchor its appearance better than words".'])
    # Text to print that the request never had, reasoning or not, is flagged and its sentence goes
    # (GRPO+SDL wrote this on GenEval 0501); the request's own words, in any case, are not invented.
    request = "a photo of a yellow dining table and a pink dog"
    invented = ('A photo of a yellow dining table and a pink dog. Render the text "yellow dining table", "pink dog" '
                'exactly as written, letter for letter. High detail, no watermark.')
    (problem,) = gen_prompt_problems(request, invented)
    assert '"yellow dining table", "pink dog"' in problem and "never had" in problem
    assert without_reasoning(request, invented) == (
        "A photo of a yellow dining table and a pink dog. High detail, no watermark.",
        ['Render the text "yellow dining table", "pink dog" exactly as written, letter for letter.'])
    assert gen_prompt_problems('a sign that says Welcome Home', 'A wooden sign reading "WELCOME HOME".') == []
    # In the first sentence it is the description itself: flagged, never cut away.
    first = 'A pink dog under a banner reading "GOOD DOG". Soft light.'
    assert gen_prompt_problems("a pink dog", first) and without_reasoning("a pink dog", first) == (first, [])
    # Tabs part pieces as a full stop does (the shipped adapter wrote this on PartiPrompts 0227).
    tabbed = ("a kachina doll\tA picture of kachina doll\tThe request fixes exact counts, so I have what I need: "
              "0 fact(s), 0 reference object")
    assert without_reasoning("a kachina doll", tabbed) == (
        "a kachina doll\tA picture of kachina doll",
        ["The request fixes exact counts, so I have what I need: 0 fact(s), 0 reference object"])
    # Self-talk glued to the user's closing quote goes from the quote on; the quote stays (the shipped
    # adapter wrote this on a lighthouse request, 2026-12-07). A quote followed by a space is left
    # as before: there the sentence's own words may be description.
    request = 'A lighthouse on a rocky cliff at dusk with a sign that reads "NORTH POINT"'
    glued = ('A lighthouse on a rocky cliff at dusk with a sign that reads "NORTH POINT"ENOUGH WORDS TO BEGIN THE '
             'PROGRAM: I have what I have. Coherent single image.')
    assert without_reasoning(request, glued) == (
        'A lighthouse on a rocky cliff at dusk with a sign that reads "NORTH POINT". Coherent single image.',
        ["ENOUGH WORDS TO BEGIN THE PROGRAM: I have what I have."])
    spaced = 'A sign that reads "NORTH POINT" on a lighthouse, I have what I need.'
    assert without_reasoning(request, spaced) == (spaced, [])
    # A position stated and then taken back is flagged, and the sentence that takes it back goes
    # (the 2026-12-05 SFT adapter wrote this on GenEval 0441).
    request = "a photo of a vase right of a horse"
    both = "A photo of vase right of horse. Facts to respect: The vase is right of horse; the horse is right of vase."
    (problem,) = gen_prompt_problems(request, both)
    assert "one way only" in problem and "vase right of horse" in problem
    assert without_reasoning(request, both)[0] == "A photo of vase right of horse."
    assert gen_prompt_problems(request, "A vase right of a horse; the horse stands left of the vase.") == []
    # A "fact" none of the run's search results holds is flagged and its sentence goes.
    claimed = "A photo of a cat. Facts to respect: The cat is a mammal, not reptile. Soft light."
    assert gen_prompt_problems("a photo of a cat", claimed) == []  # nothing to check it against
    made_up = ["Facts to respect: The cat is a mammal, not reptile."]  # relevance.unsupported_facts finds them
    (problem,) = gen_prompt_problems("a photo of a cat", claimed, unsupported=made_up)
    assert "only what a search result said" in problem
    assert without_reasoning("a photo of a cat", claimed, unsupported=made_up) == (
        "A photo of a cat. Soft light.", ["Facts to respect: The cat is a mammal, not reptile."])
    # A count the request never gave is flagged, and its sentence goes after the description.
    doubled = "A small airplane. Counts: exactly 2 airplanes, each one fully visible. Clear sky."
    (problem,) = gen_prompt_problems("a small airplane", doubled)
    assert "2 airplanes" in problem and "never gave" in problem
    assert without_reasoning("a small airplane", doubled) == (
        "A small airplane. Clear sky.", ["Counts: exactly 2 airplanes, each one fully visible."])
    # Nothing is cut when that would lose what the request asked for (here its count).
    request = "three cats on a sofa"
    kept = "I have three cats on a sofa. Warm light."
    assert without_reasoning(request, kept) == (kept, [])
    clean = "Three cats on a sofa, warm light."
    assert without_reasoning(request, clean) == (clean, [])


def test_a_dropped_quoted_text_is_put_back_verbatim():
    request = 'a robot holding a sign with "Let\'s PAINT!" written on it'
    assert with_request_quotes(request, "A robot holding a sign with") == (
        'A robot holding a sign with. The text "Let\'s PAINT!" appears exactly as written.', ["Let's PAINT!"])
    kept = 'A robot with a sign reading "Let\'s PAINT!".'
    assert with_request_quotes(request, kept) == (kept, [])


CORRECTED = [
    {"role": "system", "content": "Plan an image."},
    {"role": "user", "content": "A red fox on a snowy hill at dawn."},
    {"role": "assistant", "content": '<think>Writing the program now.</think>\n<answer>{"gen_prompt": "A red fox on '
                                     'a snowy hill at dawn. High detail.", "reference_images": []}</answer>'},
    {"role": "user", "content": "Your last turn could not be used: say it once more."},
]


@pytest.mark.timeout(900)
def test_prompt_lookup_drafts_from_the_conversation_and_writes_the_same_turn_under_the_grammar(tiny_gemma_path):  # noqa: F811
    """``lookup=N`` drafts tokens from earlier in the conversation and checks them in one forward
    pass: greedy, it must write exactly the tokens plain decoding writes, grammar and all. The
    grammar's matcher is shown each drafted position and rolls back where the draft is refused."""
    from genevolve.policies import make_policy

    turns = {}
    for lookup in (0, 6):
        policy = make_policy(f"hf:{tiny_gemma_path}?lookup={lookup}", dtype=torch.float32)
        calls = []
        policy.model.register_forward_hook(lambda *_: calls.append(1))
        policy.prepare_turn(turn_rules(None, [], answer_only=True))
        text = "".join(policy.stream(CORRECTED))
        assert policy.last_grammar_error is None
        turns[lookup] = (text, policy.last_stats["new_tokens"], len(calls))
    (plain, tokens, passes), (drafted, drafted_tokens, drafted_passes) = turns[0], turns[6]
    # The turn is the same; a draft accepted in one pass may run a token or two past its closing tag.
    assert drafted == plain and tokens <= drafted_tokens <= tokens + 6
    assert parse_turn(plain).kind == "answer"
    # The JSON the grammar forces ('", "reference_images": [') was said before: drafts were accepted,
    # so fewer forward passes wrote the same tokens.
    assert drafted_passes < passes, (passes, drafted_passes)


@pytest.mark.timeout(900)
def test_prompt_lookup_keeps_to_the_conversation_across_turns(tiny_gemma_path):  # noqa: F811
    """A drafting turn keeps the conversation's cache for the next and feeds the model only what
    the cache lacks. (transformers' assisted generation fed the whole prompt to a cache that held it
    already: the shipped adapter's second turn repeated its first word for word.) Turn two is what
    plain decoding writes, from the kept cache."""
    from genevolve.policies import make_policy

    tool_reply = {"role": "user", "content": "<tool_response>\nA red fox on a snowy hill: nothing found.\n</tool_response>"}
    written = {}
    for lookup in (0, 6):
        policy = make_policy(f"hf:{tiny_gemma_path}?lookup={lookup}", dtype=torch.float32)
        messages = list(CORRECTED)
        turns = []
        for _ in range(2):
            policy.prepare_turn(turn_rules(None, []))
            turns.append("".join(policy.stream(messages)))
            messages = [*messages, {"role": "assistant", "content": turns[-1]}, tool_reply]
        written[lookup] = turns
        # The second turn started from the first's cache: all of the first turn's prompt was kept.
        assert policy.last_stats["reused_tokens"] >= len(policy.encode(CORRECTED)), lookup
    assert written[6] == written[0]


@pytest.mark.timeout(900)
def test_drafting_shows_the_logits_processors_only_prefixes_of_what_it_keeps(tiny_gemma_path):  # noqa: F811
    """transformers' assisted generation asks the processors for every drafted position, also
    after the draft has parted from the model's choice: the turn grammar then explored text the
    turn never held, and its lexer ran out of room ("too many expressions constructed") on 4 of
    the 36 public requests, which then went on unconstrained. Our loop stops at the first drafted
    token the model does not choose, so the grammar sees what plain decoding shows it."""
    from transformers import AutoModelForCausalLM, DynamicCache, LogitsProcessorList

    from genevolve.policies.drafting import generate_with_lookup

    model = AutoModelForCausalLM.from_pretrained(tiny_gemma_path, dtype=torch.float32).eval()
    seen: list[list[int]] = []

    def record(input_ids, scores):
        seen.append(input_ids[0].tolist())
        return scores

    fed: list[int] = []
    model.register_forward_pre_hook(lambda _m, _a, kw: fed.append(kw["input_ids"].shape[1]), with_kwargs=True)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12] * 4 + [5, 6, 7]])
    with torch.no_grad():
        out = generate_with_lookup(model, ids, DynamicCache(), draft_tokens=6, max_new_tokens=24,
                                   processors=LogitsProcessorList([record]))
    final = out["sequences"][0].tolist()
    new = len(final) - ids.shape[1]
    assert new == 24 and len(out["logits"]) == new
    assert all(final[: len(prefix)] == prefix for prefix in seen)
    # Drafts were tried and some of their tokens thrown away: more tokens were fed than kept.
    assert max(fed[1:]) > 1 and sum(fed) > ids.shape[1] + new - 1
    # The cache holds every token but the last one, ready for the next turn.
    assert out["cache"].get_seq_length() == len(final) - 1


def test_a_draft_is_what_followed_the_latest_ngram_where_it_was_first_said():
    from genevolve.policies.drafting import lookup_draft

    seq = torch.tensor([5, 6, 7, 8, 9, 1, 5, 6, 7, 2, 5, 6, 7])
    # the trigram 5 6 7 was first followed by 8 9 1 ...
    assert lookup_draft(seq, 3, 3).tolist() == [8, 9, 1]
    assert lookup_draft(seq, 3, 100).tolist() == [8, 9, 1, 5, 6, 7, 2, 5, 6, 7]
    # shorter n-grams when the longer one was never said before: "4" is new, so nothing; "1" was
    assert lookup_draft(torch.tensor([1, 2, 3, 4]), 3, 2).tolist() == []
    assert lookup_draft(torch.tensor([1, 2, 3, 9, 3]), 3, 2).tolist() == [9, 3]
    assert lookup_draft(torch.tensor([7]), 3, 4).tolist() == []


def test_drafts_from_earlier_turns_win_only_when_they_match_more_and_stay_inside_their_turn():
    from genevolve.policies.drafting import DraftMemory, lookup_draft

    memory = DraftMemory(max_tokens=20, max_ngram=4)
    memory.add([1, 2, 3, 4, 5, 6])
    memory.add([0, 2, 3, 4, 8, 9])
    # "4" was never said in this sequence: the memory's earliest "2 3 4" gives what followed it there
    assert lookup_draft(torch.tensor([9, 2, 3, 4]), 3, 2, memory).tolist() == [5, 6]
    # the conversation's own "2 3 4" (followed by 7 0) against the memory's longer "0 2 3 4"
    seq = torch.tensor([2, 3, 4, 7, 0, 2, 3, 4])
    assert lookup_draft(seq, 3, 2).tolist() == [7, 0]
    assert lookup_draft(seq, 3, 2, memory).tolist() == [8, 9]
    assert lookup_draft(torch.tensor([5, 3, 4, 7, 1, 3, 4]), 3, 2, memory).tolist() == [7, 1]  # a tie: the conversation
    # a draft stops at the end of the turn it came from; the last token of a turn starts nothing
    assert memory.draft([4, 5], 8) == [6] and memory.draft([9], 8) == []
    memory.add(list(range(30, 40)))  # past 20 tokens: the older half goes
    assert len(memory) == 16 and memory.draft([2, 3], 8) == [4, 8, 9] and memory.draft([31], 2) == [32, 33]


@pytest.mark.timeout(900)
def test_a_policy_drafts_a_new_conversation_from_what_it_wrote_before(tiny_gemma_path):  # noqa: F811
    """The same turn written a second time, in a new conversation, by a policy that remembers its
    turns takes fewer forward passes than by one drafting from the conversation alone; greedy,
    the text is the same."""
    from genevolve.policies import make_policy

    messages = [{"role": "system", "content": "Write the program."},
                {"role": "user", "content": "A lighthouse on a cliff at night, three gulls above it."}]
    other = [{"role": "system", "content": "Write the program."}, {"role": "user", "content": "A blue bicycle."}]
    written = {}
    for memory in (0, 4096):
        policy = make_policy(f"hf:{tiny_gemma_path}?lookup=6&memory={memory}", dtype=torch.float32)
        turns = []
        for conversation in (messages, other, messages):  # another conversation between: no cache to reuse
            policy.prepare_turn(turn_rules(None, [], answer_only=True))
            turns.append(("".join(policy.stream(conversation)), policy.last_stats["forward_passes"]))
        written[memory] = turns
    assert [t for t, _ in written[4096]] == [t for t, _ in written[0]]
    assert written[4096][0] == written[0][0]  # nothing remembered yet
    assert written[4096][2][1] < written[0][2][1], written
    # A seeded memory (what a fresh nano process starts with) drafts the very first turn.
    seeded = make_policy(f"hf:{tiny_gemma_path}?lookup=6", dtype=torch.float32)
    assert seeded.seed_drafts([written[0][0][0]]) > 0
    seeded.prepare_turn(turn_rules(None, [], answer_only=True))
    assert "".join(seeded.stream(messages)) == written[0][0][0]
    assert seeded.last_stats["forward_passes"] < written[0][0][1]
    assert make_policy(f"hf:{tiny_gemma_path}?lookup=6&memory=0", dtype=torch.float32).seed_drafts(["x"]) == 0
    with pytest.raises(PolicyError, match=r"memory=-1: give how many tokens of earlier turns.*\(0: the conversation only\)"):
        make_policy(f"hf:{tiny_gemma_path}?memory=-1", dtype=torch.float32)
