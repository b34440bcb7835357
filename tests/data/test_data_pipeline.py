"""The SFT data pipeline: recipes -> teacher trajectories -> filters -> GT renders -> splits.

Real parts throughout: the planner teacher, offline tools on the shipped corpus and library,
the sufficiency judge, the layout renderer, OCR. The one server (a renderer service that draws
no text, standing in for a generative model that drops the lettering) runs on 127.0.0.1.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genevolve.batch import BatchRun
from genevolve.config import Settings
from genevolve.data.pipeline import (BuildConfig, BuildDirError, BuildSetupError, DatasetBuilder, build_dataset,
                                    filter_trajectory)
from genevolve.data.recipes import (CATEGORIES, NEAR_DUPLICATE, bench_questions, generate_recipes, near_duplicate,
                                    similarity)
from genevolve.judges import make_judge
from genevolve.program import Program
from genevolve.protocol import parse_turn
from genevolve.trajectory import Step, Trajectory
from helpers.local_http import serve

N = 8
SEED = 0
SIZE = "320x320"


def _settings(tmp: Path) -> Settings:
    return Settings(offline=True, extra={"library_embeddings": False}, runs_dir=str(tmp / "runs"))


def _config(**kw) -> BuildConfig:
    base = dict(recipes=N, seed=SEED, parallel=2, size=(320, 320), offline=True)
    base.update(kw)
    return BuildConfig(**base)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """One build of N recipes through the real command line."""
    from genevolve.cli import app

    tmp = tmp_path_factory.mktemp("data")
    config = tmp / "settings.json"
    config.write_text(json.dumps({"extra": {"library_embeddings": False}, "runs_dir": str(tmp / "runs")}))
    out = tmp / "build"
    result = CliRunner().invoke(app, ["data", "build", "--out", str(out), "--recipes", str(N), "--seed", str(SEED),
                                      "--size", SIZE, "--parallel", "2", "--val-fraction", "0.25", "--offline",
                                      "--no-progress", "--config", str(config)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


def _records(out: Path) -> list[dict]:
    rows = []
    for name in ("train.jsonl", "val.jsonl"):
        rows += [json.loads(line) for line in (out / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def test_build_writes_valid_sft_records(built):
    assert (built / "train.jsonl").is_file() and (built / "val.jsonl").is_file()
    records = _records(built)
    assert len(records) >= N // 2, "the planner teacher should pass the filters on most recipes"
    assert (built / "val.jsonl").read_text().strip(), "val-fraction 0.25 of the kept records must hold some out"
    for rec in records:
        roles = [m["role"] for m in rec["messages"]]
        assert roles[0] == "system" and roles[1] == "user" and "assistant" in roles
        assert set(roles) <= {"system", "user", "assistant"}
        turns = [parse_turn(m["content"]) for m in rec["messages"] if m["role"] == "assistant"]
        assert all(t.kind != "error" for t in turns), [t.error for t in turns]
        assert turns[-1].kind == "answer" and Program.from_answer(turns[-1].answer).gen_prompt
        assert all(t.kind == "tool_call" for t in turns[:-1])
        markers = sum(m["content"].count("<image>") for m in rec["messages"])
        assert markers == len(rec["images"])
        for rel in rec["images"] + [rec["gt_image"]]:
            assert not Path(rel).is_absolute() and (built / rel).is_file(), rel
    assert any(rec["images"] for rec in records), "some recipes carry user images or retrieved references"


def test_manifest_counts_stages_and_categories(built):
    manifest = json.loads((built / "manifest.json").read_text())
    c = manifest["counts"]
    assert manifest["seed"] == SEED and manifest["settings"]["teacher"] == "planner"
    assert c["recipes"] == N == c["trajectories"]
    assert c["recipes"] >= c["answered"] >= c["filter_passed"] >= c["kept"] == c["train"] + c["val"]
    assert c["kept"] == len(_records(built))
    assert sum(v["recipes"] for v in manifest["per_category"].values()) == N
    assert len(manifest["per_category"]) == N, "a block of recipes covers distinct categories"
    assert sum(manifest["rejections_first"].values()) == N - c["kept"]
    # Recipes with exact text were checked on their GT render by OCR.
    recipes = [json.loads(line) for line in (built / "recipes.jsonl").read_text().splitlines()]
    texty = {r["id"] for r in recipes if '"' in r["request"]}
    assert texty, "seed 0 draws text recipes among the first 8"
    gt = BatchRun(built / "stages").rows("gt")
    checked = [gt[i] for i in texty if i in gt]
    assert checked and all(row.get("text_score") == 1.0 for row in checked if row["kept"])


def test_same_seed_same_dataset_and_resume_continues(built, tmp_path):
    settings = _settings(tmp_path)
    fresh = tmp_path / "fresh"
    build_dataset(fresh, _config(val_fraction=0.25), settings=settings)
    for name in ("recipes.jsonl", "train.jsonl", "val.jsonl"):
        assert (fresh / name).read_bytes() == (built / name).read_bytes(), name
    assert sorted(p.name for p in (fresh / "images").iterdir()) == sorted(p.name for p in (built / "images").iterdir())

    # A build killed part-way: keep three finished recipes and a torn line, then resume.
    killed = tmp_path / "killed"
    shutil.copytree(fresh, killed)
    for stage in ("trajectories", "filters", "gt"):
        path = killed / "stages" / f"{stage}.jsonl"
        lines = path.read_text().splitlines(keepends=True)
        keep = {f"rec_{i:05d}" for i in range(3)}
        path.write_text("".join(l for l in lines if json.loads(l)["id"] in keep) + '{"id": "rec_0000')
    with pytest.raises(BuildDirError):
        build_dataset(killed, _config(val_fraction=0.25), settings=settings)  # no --resume: refuse
    with pytest.raises(BuildDirError):
        build_dataset(killed, _config(val_fraction=0.25, seed=1), settings=settings, resume=True)
    build_dataset(killed, _config(val_fraction=0.25), settings=settings, resume=True)
    for name in ("train.jsonl", "val.jsonl"):
        assert (killed / name).read_bytes() == (fresh / name).read_bytes(), name
    assert len(BatchRun(killed / "stages").rows("trajectories")) == N

    other = [r.request for r in generate_recipes(N, SEED + 1)]
    assert other != [json.loads(l)["request"] for l in (fresh / "recipes.jsonl").read_text().splitlines()]


def test_filters_reject_a_teacher_that_answers_an_invalid_program(tmp_path):
    bad = '<think>done</think>\n<answer>{"gen_prompt": "like IMG_007 at https://example.com/x.png", ' \
          '"reference_images": [{"img_id": "IMG_007", "note": "style"}]}</answer>'
    unreadable = "<think>hmm</think>\n<answer>{not json at all</answer>"
    script = tmp_path / "bad.jsonl"
    script.write_text("".join(json.dumps({"content": t}) + "\n" for t in (bad, bad)))
    out = tmp_path / "bad_build"
    manifest = build_dataset(out, _config(recipes=2, teacher=f"replay:{script}"), settings=_settings(tmp_path))
    assert manifest["counts"]["answered"] == 2, "the runtime repairs the program, so there is one"
    assert manifest["counts"]["kept"] == 0 and not (out / "train.jsonl").read_text().strip()
    assert manifest["rejections"]["format_error"] == 2 and manifest["rejections"]["program_repaired"] == 2

    script.write_text("".join(json.dumps({"content": t}) + "\n" for t in (unreadable, unreadable)))
    manifest = build_dataset(tmp_path / "bad2", _config(recipes=1, teacher=f"replay:{script}"),
                             settings=_settings(tmp_path))
    assert manifest["counts"]["kept"] == 0
    assert {"no_program", "termination_format_error"} <= set(manifest["rejections"])


def test_filter_rules_on_hand_built_trajectories():
    judge = make_judge("sufficiency")
    recipe = {"id": "x", "request": 'A shop sign that says "OPEN LATE" above a door.', "category": "text_layout",
              "track": "quality"}
    # A program that drops the exact text and never consulted text_rendering: sufficiency 0.5.
    weak = Trajectory(request=recipe["request"], termination="answer",
                      program=Program(gen_prompt="A shop sign above a door."), steps=[Step(round=1, kind="answer")])
    res = filter_trajectory(weak, recipe, judge, 0.75)
    assert not res.kept and "low_sufficiency" in res.reasons and res.sufficiency < 0.75
    assert filter_trajectory(weak, recipe, judge, 0.5).kept
    # A reference to an image no tool returned.
    bad_ref = Trajectory(request=recipe["request"], termination="answer",
                         program=Program.from_answer({"gen_prompt": 'A sign reading "OPEN LATE", styled like the '
                                                      'first reference image.',
                                                      "reference_images": [{"img_id": "IMG_004"}]}))
    assert "invalid_program_unknown_id" in filter_trajectory(bad_ref, recipe, judge, 0.0).reasons


class _TextlessRenderer(BaseHTTPRequestHandler):
    """A renderer service that answers with a plain picture: a generative model that lost the text."""

    def do_POST(self):  # noqa: N802 - http.server naming
        from PIL import Image

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        buf = io.BytesIO()
        Image.new("RGB", (body["width"], body["height"]), (90, 140, 200)).save(buf, format="PNG")
        data = json.dumps({"success": True, "image": base64.b64encode(buf.getvalue()).decode()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_gt_text_check_rejects_a_render_without_the_text(built, tmp_path):
    with serve(_TextlessRenderer) as server:
        url = server.url
        builder = DatasetBuilder(tmp_path / "gt", _config(renderer=f"service:{url}"), settings=_settings(tmp_path))
        builder.out.mkdir()
        recipes = {r["id"]: r for r in map(json.loads, (built / "recipes.jsonl").read_text().splitlines())}
        trajs = BatchRun(built / "stages").rows("trajectories")
        texty = next(i for i, r in recipes.items() if '"' in r["request"])
        plain = next(i for i, r in recipes.items() if '"' not in r["request"])
        row = builder.do_gt(recipes[texty], trajs[texty])
        assert not row["kept"] and row["reasons"] == ["gt_text_mismatch"] and row["text_missing"]
        assert builder.do_gt(recipes[plain], trajs[plain])["kept"]


def test_requests_stay_clear_of_the_bench():
    questions = bench_questions()
    assert len(questions) >= 30
    for seed in (0, 7):
        recipes = generate_recipes(160, seed)
        assert {r.category for r in recipes} == set(CATEGORIES)
        assert len({r.request for r in recipes}) == len(recipes)
        for r in recipes:
            assert r.request not in questions
            assert near_duplicate(r.request, questions) is None, r.request
            for p in r.images:
                assert Path(p).is_file()
            if '"' in r.request:
                assert "text_rendering" in r.skills_expected
            if r.category == "counting":
                assert "quantity_counting" in r.skills_expected
        assert sum(bool(r.images) for r in recipes) >= 10, "some recipes bring user reference images"
    # The measure sees copies and light paraphrases of a bench question...
    q = questions[24]
    assert similarity(q.upper().replace(",", ""), q) >= NEAR_DUPLICATE
    assert similarity(q.replace("on top of", "on").replace("white table", "white desk"), q) >= NEAR_DUPLICATE
    # ...and the generator routes around a question it would otherwise produce.
    first = generate_recipes(1, 3, avoid=[])[0].request
    assert generate_recipes(1, 3, avoid=[first])[0].request != first


def test_built_requests_are_not_bench_questions(built):
    questions = bench_questions()
    for line in (built / "recipes.jsonl").read_text().splitlines():
        req = json.loads(line)["request"]
        assert max(similarity(req, q) for q in questions) < NEAR_DUPLICATE


def test_command_refuses_bad_specs_and_honours_extra_benches(tmp_path):
    from genevolve.cli import app

    runner = CliRunner()
    out = tmp_path / "never"
    result = runner.invoke(app, ["data", "build", "--out", str(out), "--recipes", "2",
                                 "--teacher", f"replay:{tmp_path / 'missing.jsonl'}", "--no-progress"])
    assert result.exit_code == 2 and "replay file not found" in result.output
    result = runner.invoke(app, ["data", "build", "--out", str(out), "--recipes", "2", "--renderer", "bogus",
                                 "--no-progress"])
    assert result.exit_code == 2 and "unknown renderer" in result.output
    assert not out.exists(), "a build that cannot start leaves nothing behind"

    # A private bench holding exactly what seed 0 would draw first: the build must draw something else.
    first = generate_recipes(1, SEED)[0].request
    private = tmp_path / "private_bench.jsonl"
    private.write_text(json.dumps({"id": "p1", "question": first}) + "\n")
    builder = DatasetBuilder(tmp_path / "b", _config(recipes=1, avoid=[str(private)]), settings=_settings(tmp_path))
    recipes = builder._prepare()
    assert recipes[0]["request"] != first and similarity(recipes[0]["request"], first) < NEAR_DUPLICATE
    with pytest.raises(BuildSetupError, match="bench file not found"):
        DatasetBuilder(tmp_path / "c", _config(avoid=[str(tmp_path / "nope.jsonl")]),
                       settings=_settings(tmp_path))._prepare()


def test_filter_rejects_a_program_that_carries_an_irrelevant_fact():
    """A teacher that copies a Golden Gate note into a snooker request is no training data."""
    judge = make_judge("sufficiency")
    request = "The main stage of the World Snooker Championship at the Crucible Theatre, tense final frame."
    recipe = {"id": "x", "request": request, "category": "landmark", "track": "knowledge"}
    reply = ('Search results from the offline local corpus:\n### "World Snooker Championship"\n'
             "1. **Golden Gate Bridge — Size** — Its main span is 1,280 metres, the longest suspension span in "
             "the world from 1937 until 1964. (source: golden_gate_bridge.md)")
    search = Step(round=1, kind="tool_call", tool_name="search",
                  tool_arguments={"queries": ["World Snooker Championship"]}, tool_text=reply)

    def trajectory(prompt):
        return Trajectory(request=request, termination="answer", program=Program(gen_prompt=prompt),
                          steps=[search, Step(round=2, kind="answer")])

    carried = trajectory(request + " Facts to respect: Its main span is 1,280 metres, the longest suspension "
                                   "span in the world from 1937 until 1964.")
    assert "irrelevant_fact" in filter_trajectory(carried, recipe, judge, 0.0).reasons
    clean = filter_trajectory(trajectory(request + " Dramatic overhead light on the green baize."), recipe, judge, 0.0)
    assert "irrelevant_fact" not in clean.reasons and clean.kept


def test_some_requests_name_a_library_subject_for_the_teacher_to_find(tmp_path):
    """A student learned to bind the user's pictures (11 of 11) and never a library picture it was
    shown (0 of 6 on public requests): some requests now name a library subject with no picture
    given, and the teacher finds it with image_search and binds it."""
    from genevolve.agent import Agent, AgentConfig
    from genevolve.data.recipes import LIBRARY_SUBJECTS
    from genevolve.policies.planner import PlannerPolicy
    from genevolve.tools import build_tools

    nouns = set(LIBRARY_SUBJECTS.values())
    named = [r for r in generate_recipes(200, seed=SEED, avoid=[])
             if not r.images and r.category in ("spatial_relation", "creative_transformation")
             and any(r.request.lower().startswith((f"a {n} ", f"an {n} ", f"{n} ")) for n in nouns)]
    assert len(named) >= 4, [r.request for r in named]
    tools = build_tools(_settings(tmp_path), offline=True)
    bound = 0
    for recipe in named[:4]:
        traj = Agent(PlannerPolicy(), tools, AgentConfig(protocol="nano"), work_dir=tmp_path).run(recipe.request)
        sources = {i.img_id: i.source for i in traj.images}
        bound += any(sources[r.img_id] == "library" for r in traj.program.reference_images)
    assert bound >= 2, [r.request for r in named[:4]]
