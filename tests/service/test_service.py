"""The generate service (genevolve.service): the one path the CLI and the studio take from a form
to a rendered, checked, saved run. Real planner, real layout renderer, real OCR, real SQLite."""

from __future__ import annotations

import pytest

from genevolve.config import Settings
from genevolve.errors import UserError
from genevolve.program import MAX_REQUEST_CHARS
from genevolve.service import FORM_FIELDS, GenerateForm, generate
from genevolve.store import Store


@pytest.fixture
def settings(tmp_path):
    # BM25 alone ranks library images: no embedding model to load in these tests.
    return Settings(store_path=str(tmp_path / "db.sqlite"), cache_path=str(tmp_path / "cache.sqlite"),
                    runs_dir=str(tmp_path / "runs"), offline=True, extra={"library_embeddings": False})


def test_a_planner_run_is_streamed_rendered_verified_and_saved(settings, tmp_path):
    store = Store(settings.store_path)
    events = []
    form = GenerateForm(request='A shop sign that reads "OPEN LATE"', policy="planner", renderer="layout")
    result = generate(form, settings=settings, store=store, on_event=events.append,
                      image_dir=lambda run_id: tmp_path / "images" / run_id)

    kinds = [e.type for e in events]
    assert kinds[0] == "agent_ready" and events[0].backends["policy"] == "planner" and events[0].offline is True
    assert "round_start" in kinds and "answer" in kinds
    # The program is drawn after the agent is done, and the service says so before it renders.
    assert kinds.index("done") < kinds.index("render_start") == len(kinds) - 1

    traj = result.trajectory
    assert traj.termination == "answer" and traj.program is not None
    assert result.image_path == str(tmp_path / "images" / traj.id / "image.png")
    assert result.render["backend"] == "layout" and result.render_error is None
    found = {c["text"]: c["found"] for c in result.verification["constraints"]}
    assert found == {"OPEN LATE": True}, result.verification
    assert "1/1 text found by OCR" in result.checked

    # The store holds the run with its render and check, read back from the file.
    assert result.save_error is None
    row = Store(settings.store_path).get_run(traj.id)
    assert row["request"] == form.request and row["image_path"] == result.image_path
    assert row["verified_ok"] == 1 and row["policy"] == "planner"

    answer = result.to_json()
    assert list(answer) == ["summary", "offline", "image", "verification", "render", "checked"]
    assert answer["summary"]["id"] == traj.id and answer["image"] == result.image_path


def test_renderer_none_stops_at_the_program(settings):
    store = Store(settings.store_path)
    result = generate(GenerateForm(request="three red apples on a plate", renderer="none"),
                      settings=settings, store=store)
    assert result.trajectory.program is not None and result.image_path is None and result.render_error is None
    assert list(result.to_json()) == ["summary", "offline", "image", "verification"]
    assert store.get_run(result.trajectory.id)["image_path"] is None


@pytest.mark.parametrize("form, words", [
    (GenerateForm(request=""), "the request is empty"),
    (GenerateForm(request="  \n "), "the request is empty"),
    (GenerateForm(request="x" * (MAX_REQUEST_CHARS + 1)), f"at most {MAX_REQUEST_CHARS:,} are accepted"),
    (GenerateForm(request="a cat", renderer="bogus:x"), "unknown renderer 'bogus:x'"),
    (GenerateForm(request="a cat", uploads=["/no/such/photo.png"]), "no such file"),
], ids=["empty", "blank", "too-long", "bad-renderer", "missing-image"])
def test_bad_input_is_refused_before_any_work(settings, form, words):
    store = Store(settings.store_path)
    events = []
    with pytest.raises(UserError, match=words):
        generate(form, settings=settings, store=store, on_event=events.append)
    assert events == [], "no agent was built, nothing streamed"
    assert store.list_runs() == [], "nothing was saved"


def test_an_unknown_policy_is_a_user_error_before_the_first_round(settings):
    store = Store(settings.store_path)
    events = []
    with pytest.raises(UserError, match="unknown policy spec 'nope'"):
        generate(GenerateForm(request="a cat", policy="nope"), settings=settings, store=store,
                 on_event=events.append)
    assert events == [] and store.list_runs() == []


def test_the_form_takes_page_values_and_the_cli_reads_its_help_from_it():
    import typer

    from genevolve.cli import app

    # A page sends its fields in FORM_FIELDS order; an empty box comes as None and means the default.
    form = GenerateForm.from_values(["a fox", None, "nano", True, " /ad ", None, None, False, 3.0, None])
    assert form.values() == ("a fox", [], "nano", True, " /ad ", "layout", False, False, 3, "")
    assert form.policy_spec() == "nano?4bit=1&adapter=/ad"
    assert GenerateForm.from_values(form.values()) == form
    with pytest.raises(ValueError, match=f"has {len(FORM_FIELDS)} fields"):
        GenerateForm.from_values(["a fox"])
    with pytest.raises(ValueError):
        GenerateForm(request="a fox", colour="red")  # an unknown field is an error, not ignored

    # `genevolve run`'s options say what the form's fields say.
    run = typer.main.get_command(app).get_command(None, "run")
    helps = {p.name: p.help for p in run.params}
    for option, field in (("image", "uploads"), ("policy", "policy"), ("renderer", "renderer"),
                          ("offline", "offline"), ("typeset", "typeset"), ("seed", "seed"), ("protocol", "protocol")):
        assert helps[option] == GenerateForm.help(field), option
