"""The studio's handlers in-process against a real store, real planner runs and real files.

Runs that belong to the session (a closed stream does not end them), the shared-model queue
(planner runs never wait in it; a queued run says its place), upload limits, the form kept per
session, export that honours verdicts, bench and data-build trajectories in the Inspector, and
the small fixes (fail-fast diffusers, one "render failed", nano's warning before round 1).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _light_library(tmp_path, monkeypatch):
    """Rank library images by BM25 alone: no embedding model to load in these tests."""
    cfg = tmp_path / "studio.yaml"
    cfg.write_text("extra:\n  library_embeddings: false\n")
    monkeypatch.setenv("GENEVOLVE_STUDIO_CONFIG", str(cfg))


def _drain(gen):
    last = None
    for out in gen:
        last = out
    return last


def _generate(text, sid, *, uploads=None, policy="planner", renderer="layout"):
    from app import generate_tab
    from genevolve.service import GenerateForm

    form = GenerateForm(request=text, uploads=uploads, policy=policy, renderer=renderer)
    return generate_tab.run_generate(form, sid)


def _wait_done(sid, timeout=120):
    from app import live_runs

    deadline = time.time() + timeout
    while time.time() < deadline:
        run = live_runs.registry().current(sid)
        if run is not None and run.done:
            return run
        time.sleep(0.1)
    raise AssertionError(f"the run of {sid} did not finish in {timeout}s")


def _photo(path: Path) -> Path:
    from skimage import data

    Image.fromarray(data.chelsea()).save(path)
    return path


# ---------------------------------------------------------------- runs belong to the session


def test_a_run_outlives_the_stream_that_started_it_and_reattaches():
    from app import generate_tab, live_runs, storage

    sid = "reloadAAAA01"
    stream = _generate('A shop sign that reads "OPEN ALL NIGHT"', sid)
    first = next(stream)
    # Updates are coalesced: on a busy machine the worker may be past "Starting" by the first read.
    assert str(first["status"]).startswith(("● Starting", "● Round 1")), first["status"]
    stream.close()  # the page reloaded: Gradio stops reading this stream
    run = _wait_done(sid)
    runs = storage.store().list_runs(session=sid)
    assert [r["termination"] for r in runs] == ["answer"], "closing the stream must not cancel the run"
    # The reloaded page follows the session's run: it gets the finished result at once.
    final = _drain(generate_tab.attach(sid))
    assert set(final) == set(live_runs.FIELDS), "the last update carries every field"
    status, events, program, image, history = (final[k] for k in ("status", "events", "program", "image", "history"))
    assert "answer" in status and run.id
    assert "OPEN ALL NIGHT" in program and str(image).endswith("image.png")
    assert "ge-ev-done" in events and [r[0] for r in history] == [runs[0]["id"]]
    # Another session has nothing to re-attach to.
    assert list(generate_tab.attach("reloadBBBB02")) == [{}]


def test_a_second_click_follows_the_run_already_going():
    from app import live_runs

    sid = "twiceAAAA003"
    first = _generate('A poster with the words "ONE RUN"', sid)
    next(first)
    second = _generate('A poster with the words "TWO RUNS"', sid)
    note = next(second)
    assert set(note) == {"status"} and "still going" in note["status"]
    _drain(second)
    first.close()
    run = live_runs.registry().current(sid)
    assert run.done and "ONE RUN" in run.value("program")


def test_the_form_survives_a_reload_and_keeps_only_the_sessions_own_images(tmp_path):
    from app import generate_tab
    from app.generate_form import remember_form, restore_form
    from genevolve.service import FORM_FIELDS

    sid = "formAAAA0004"
    kept, msg = generate_tab.accept_uploads([str(_photo(tmp_path / "cat.png"))], sid)
    assert not msg and len(kept) == 1 and f"/sessions/{sid}/uploads/" in kept[0]
    # As the page calls it: the form's fields in order, then the session id.
    remember_form('A card of my cat, "HELLO"', kept, "openai:m@http://127.0.0.1:9/v1", True, "ad",
                  "none", True, False, 7.0, "", sid)
    restored = dict(zip(FORM_FIELDS, restore_form(sid)))
    assert restored == {"request": 'A card of my cat, "HELLO"', "uploads": kept,
                        "policy": "openai:m@http://127.0.0.1:9/v1", "four_bit": True, "adapter": "ad",
                        "renderer": "none", "typeset": True, "offline": False, "seed": 7,
                        "protocol": ""}
    # A forged form file cannot make the page serve another folder's file.
    form = Path(kept[0]).parents[1] / "form.json"
    data = json.loads(form.read_text())
    data["uploads"] = ["/etc/hostname"]
    form.write_text(json.dumps(data))
    assert dict(zip(FORM_FIELDS, restore_form(sid)))["uploads"] is None
    # A new session starts from the defaults.
    fresh = dict(zip(FORM_FIELDS, restore_form("formBBBB0005")))
    assert fresh["request"] == "" and fresh["policy"] == "planner" and fresh["offline"] is True


def test_a_restore_keeps_what_the_user_typed_before_it_arrived():
    """The page restores the session's form a round trip after it loads; a field the user already
    changed by then keeps the user's value (the rest come back as saved)."""
    import gradio as gr

    from app.generate_form import remember_form, restore_unless_edited
    from genevolve.service import FORM_FIELDS, GenerateForm

    sid = "formCCCC0006"
    remember_form("the saved request", None, "nano", False, "", "none", False, True, 5, "", sid)
    typed = GenerateForm(request="what I typed just now", policy="openai:m@http://127.0.0.1:9/v1")
    page = dict(zip(FORM_FIELDS, restore_unless_edited(typed, sid)))
    assert page["request"] == gr.skip() and page["policy"] == gr.skip()  # the page keeps what it holds
    assert (page["renderer"], page["seed"]) == ("none", 5)  # untouched fields come back as saved
    untouched = dict(zip(FORM_FIELDS, restore_unless_edited(GenerateForm(), sid)))
    assert (untouched["request"], untouched["policy"]) == ("the saved request", "nano")


# ---------------------------------------------------------------- the shared-model queue


def test_planner_runs_never_wait_behind_a_local_model_and_queued_runs_say_their_place():
    from app import generate_tab, live_runs, storage

    assert live_runs.needs_shared_model("nano", "layout") and live_runs.needs_shared_model("hf:x?4bit=1", "layout")
    assert live_runs.needs_shared_model("planner", "diffusers:some/model")
    assert not live_runs.needs_shared_model("planner", "layout")
    assert not live_runs.needs_shared_model("openai:m@http://h/v1", "service:http://h")

    queue = live_runs.registry().queue
    holders = [f"busy-{i}" for i in range(queue.slots)]
    for h in holders:  # every model slot is taken, as by a long local-model run
        assert queue.acquire(h)
    try:
        # A local-model run waits and says where it stands (it loads nothing while waiting).
        waiting = _generate("A poster of a lighthouse", "queueAAAA006", policy="hf:/nonexistent/model")
        next(waiting)
        deadline = time.time() + 20
        status = ""
        while "Queued" not in status and time.time() < deadline:
            status = live_runs.registry().current("queueAAAA006").value("status") or ""
            time.sleep(0.05)
        assert "position 1 in the queue" in status and f"{queue.slots} run(s) ahead" in status
        # Meanwhile a planner run in another session starts and finishes at once.
        t0 = time.perf_counter()
        done = _drain(_generate('A sign that reads "NO WAIT"', "queueBBBB007"))
        assert "answer" in done["status"] and time.perf_counter() - t0 < 90
        assert live_runs.registry().current("queueAAAA006").done is False  # still queued
        # Stop takes a queued run out of the queue; nothing ran, nothing was stored.
        assert "leaving the queue" in generate_tab.stop_run("queueAAAA006")["value"]
        final = _drain(waiting)
        assert "cancelled while waiting" in final["status"]
        assert storage.store().list_runs(session="queueAAAA006") == []
        assert queue.snapshot() == (queue.slots, 0)
    finally:
        for h in holders:
            queue.release(h)


def test_model_queue_is_first_come_first_served():
    from app.live_runs import ModelQueue

    q = ModelQueue(1)
    assert q.acquire("a")
    order, places = [], {}

    def wait(name):
        q.acquire(name, on_wait=lambda place, running: places.setdefault(name, place))
        order.append(name)
        q.release(name)

    b = threading.Thread(target=wait, args=("b",))
    b.start()
    while q.position("b") is None:
        time.sleep(0.01)
    c = threading.Thread(target=wait, args=("c",))
    c.start()
    while q.position("c") is None:
        time.sleep(0.01)
    assert (q.position("b"), q.position("c")) == (1, 2)
    q.release("a")
    b.join(5)
    c.join(5)
    assert order == ["b", "c"] and places == {"b": 1, "c": 2}


# ---------------------------------------------------------------- uploads: images only, within limits


def test_uploads_accept_images_only_within_the_limits(tmp_path):
    from app import generate_tab, sessions, storage, upload_limits

    big = tmp_path / "huge.png"
    with open(big, "wb") as f:  # 300 MB, not an image, named .png (sparse: no disk is filled)
        f.truncate(300 * 1024 * 1024)
    fake = tmp_path / "notes.png"
    fake.write_text("this is text with an image's name")
    pdf = tmp_path / "scan.png"
    pdf.write_bytes(b"%PDF-1.4\n" + os.urandom(2000))
    real = _photo(tmp_path / "cat.png")

    assert "300 MB" in upload_limits.check_image_upload(big) and "at most 20 MB" in upload_limits.check_image_upload(big)
    assert "not an image" in upload_limits.check_image_upload(fake)
    assert "not an image" in upload_limits.check_image_upload(pdf)
    assert upload_limits.check_image_upload(real) is None
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)
    assert "megapixels" in upload_limits.check_image_upload(bomb)

    kept, msg = generate_tab.accept_uploads([str(big), str(fake), str(real)], "uploadAAAA08")
    assert [Path(p).name for p in kept] == ["cat.png"]
    assert "huge.png is 300 MB" in msg and "notes.png is not an image" in msg
    uploads = sessions.session_dir("uploadAAAA08", "uploads")
    assert sorted(p.name for p in uploads.iterdir()) == ["cat.png"], "a refused file must not be kept"
    # A refused file that Gradio received into its upload folder is deleted there (never served back).
    from gradio.utils import get_upload_folder

    received = Path(get_upload_folder()) / "test-refused-upload" / "sneaky.png"
    received.parent.mkdir(parents=True, exist_ok=True)
    received.write_bytes(b"MZ" + os.urandom(512))
    kept, msg = generate_tab.accept_uploads([str(received)], "uploadAAAA08")
    assert kept is None and "sneaky.png is not an image" in msg and not received.exists()
    received.parent.rmdir()
    # A run handed a non-image directly (the API, not the upload box) is refused with the reason.
    out = _drain(_generate("A card of my cat", "uploadBBBB09", uploads=[str(fake)]))
    assert "not an image" in out["status"] and storage.store().list_runs(session="uploadBBBB09") == []


# ---------------------------------------------------------------- the Inspector


def _planner_run(sid, text):
    from app import storage

    _drain(_generate(text, sid))
    (row,) = [r for r in storage.store().list_runs(session=sid) if r["request"] == text]
    return storage.store().get_trajectory(row["id"])


def test_export_honours_verdicts_with_fixes_and_says_what_it_left_out():
    from app import inspector_tab, storage

    sid = "exportAAAA10"
    st = storage.store()
    clean = _planner_run(sid, 'A sign that reads "CLEAN"')
    flagged = _planner_run(sid, 'A sign that reads "FLAGGED"')
    fixed = _planner_run(sid, 'A sign that reads "FIXED"')
    for t in (clean, flagged, fixed):
        st.add_audit(t.id, "accept")
    # needs-fix without a fix keeps the trajectory out; with a fix, the fix replaces that turn.
    inspector_tab.save_audit(flagged.id, f"step 1 · {flagged.steps[0].kind}", "needs_fix", "wrong query", "")
    fix_turn = ('<think>Search the exact words first.</think><tool_call>{"name": "search", "arguments": '
                '{"queries": ["FIXED sign lettering"]}}</tool_call>')
    refused = inspector_tab.save_audit(fixed.id, "step 1 · tool_call", "needs_fix", "", "just some words")
    assert "not a turn the policy could have written" in refused[1]
    refused = inspector_tab.save_audit(fixed.id, "whole trajectory", "needs_fix", "", fix_turn)
    assert "pick that step" in refused[1]
    timeline, audits_html, _, _ = inspector_tab.save_audit(fixed.id, "step 1 · tool_call", "needs_fix", "better",
                                                           fix_turn)
    assert "ge-fix" in timeline and "needs_fix" in audits_html

    path, msg = inspector_tab.export_sft(sid)
    import zipfile

    # One archive: the records and every image they point to, at the paths they name.
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        records = [json.loads(line) for line in z.read("sft.jsonl").decode().splitlines()]
    assert all(p in names for r in records for p in r["images"])
    firsts = [next(m["content"] for m in r["messages"] if m["role"] == "assistant") for r in records]
    requests = [r["messages"][1]["content"] for r in records]
    assert len(records) == 2 and not any("FLAGGED" in q for q in requests)
    assert fix_turn in firsts  # the annotator's turn, not the policy's
    assert fixed.steps[0].assistant_text not in firsts[requests.index(next(q for q in requests if "FIXED" in q))]
    # The fix changed the search query: the record ends at the fix, without the old query's results.
    fixed_record = next(r for r in records if "FIXED" in r["messages"][1]["content"])
    assert fixed_record["messages"][-1]["content"] == fix_turn
    assert "<tool_response>" not in json.dumps(fixed_record["messages"][2:])
    assert "Exported **2**" in msg and "with the annotator's fix" in msg
    assert f"✂ {fixed.id}" in msg and "record ends at the fix" in msg and "not re-run" in msg
    assert "left out" in msg and flagged.id in msg and "needs a fix and has none" in msg


def test_answer_step_shows_program_references_and_rendered_image(tmp_path):
    from app import generate_tab, inspector_tab, storage

    sid = "answerAAAA11"
    kept, _ = generate_tab.accept_uploads([str(_photo(tmp_path / "mycat.png"))], sid)
    _drain(_generate('A birthday card of my cat with the words "HAPPY 5"', sid, uploads=kept))
    (row,) = storage.store().list_runs(session=sid)
    _, timeline, info, _, _ = inspector_tab.open_run(sid, SimpleNamespace(row_value=[row["id"]]))
    answer = timeline.split("data-step=")[-1]
    assert "gen_prompt" in answer and "HAPPY 5" in answer
    assert "ge-refcard" in answer and "IMG_001" in answer and "data:image/jpeg;base64," in answer
    assert "class='ge-rendered'" in answer


def test_bench_and_data_build_trajectories_are_listed_by_source(tmp_path, monkeypatch):
    from app import inspector_tab, run_index, storage

    monkeypatch.chdir(tmp_path)  # the index also scans ./runs: a developer's own runs must not count here
    from genevolve.bench.loaders import load_bench
    from genevolve.bench.runner import BenchConfig, run_bench
    from genevolve.config import Settings
    from genevolve.data.pipeline import BuildConfig, build_dataset

    # A real bench run (planner · layout · local judge) into the studio's bench folder: found by itself.
    bench_dir = storage.studio_home().parent / "bench" / "run-for-inspector"
    run_bench(load_bench("mini"), bench_dir, BenchConfig(limit=1, parallel=1, offline=True,
                                                         extra={"library_embeddings": False}))
    # A real data build somewhere else: imported by naming its folder.
    data_dir = tmp_path / "build"
    build_dataset(data_dir, BuildConfig(recipes=2, parallel=1, size=(256, 256), offline=True),
                  settings=Settings(offline=True, extra={"library_embeddings": False}, runs_dir=str(tmp_path / "r")))

    rows, _ = inspector_tab.list_rows("any", "any", "any", "any", "any", False, "inspectAAA12", "bench")
    assert len(rows) == 1 and rows[0][2] == "bench"
    bench_row = storage.store().get_run(rows[0][0])
    assert bench_row["image_path"] == str(bench_dir / "cases" / "ka_arch_01" / "image.png")
    assert "imported 2 trajectories from a data folder" in inspector_tab.import_folder(str(data_dir))
    rows, _ = inspector_tab.list_rows("any", "any", "any", "any", "any", False, "inspectAAA12", "data")
    assert len(rows) == 2 and {r[2] for r in rows} == {"data"}
    # Imported twice, listed once.
    inspector_tab.import_folder(str(data_dir))
    assert len(storage.store().list_runs(source="data")) == 2
    # A folder that is neither says what it wants.
    msg = inspector_tab.import_folder(str(tmp_path))
    assert msg.startswith("✗") and "genevolve bench run" in msg and "genevolve data build" in msg
    with pytest.raises(ValueError):
        run_index.import_folder(tmp_path / "missing")


# ---------------------------------------------------------------- the smaller items


def test_diffusers_without_weights_offline_fails_fast_with_how_to_get_them():
    from app import storage

    sid = "diffAAAAAA13"
    t0 = time.perf_counter()
    out = _drain(_generate("A red fox", sid, renderer="diffusers:someone/not-downloaded-model"))
    assert time.perf_counter() - t0 < 10
    assert "cannot run here" in out["status"] and "hf download someone/not-downloaded-model" in out["status"]
    assert storage.store().list_runs(session=sid) == [], "no minutes of planning for a program nobody can draw"


def test_a_failed_render_says_render_failed_once():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _drain(_generate('A sign that reads "DOWN"', "renderAAAA14", renderer=f"service:http://127.0.0.1:{port}"))
    status, verify = out["status"], out["verify"]
    assert "render failed" in status and status.count("render failed") == 1
    assert verify.count("render failed") == 1


def test_nano_warns_before_its_first_round_and_the_hint_describes_the_choice(tiny_gemma_path, tmp_path, monkeypatch):
    from app import generate_tab, live_runs
    from genevolve.policies import local
    from genevolve.policies.local import LocalPolicy, nano_base_warning

    # The warning is for a checkout without a trained adapter: point the adapter folder at an empty one.
    monkeypatch.setattr(local, "NANO_ADAPTER_DIR", tmp_path / "no-adapter")
    warning = nano_base_warning()
    assert warning, "with no nano adapter, the base-model warning is due"
    assert "planner" in generate_tab.policy_hint("planner") and "no model" in generate_tab.policy_hint("planner")
    nano_hint = generate_tab.policy_hint("nano")
    assert "270M" in nano_hint and "untrained" in nano_hint and "planner" not in nano_hint
    assert "endpoint" in generate_tab.policy_hint("openai:gpt-4o-mini@https://api.openai.com/v1")
    assert "weights" in generate_tab.renderer_hint("diffusers:x") and "offline" in generate_tab.renderer_hint("layout")

    # A real local model stands in for the 270M weights (same class, same warning), so the test
    # sees the order of events without loading Gemma.
    generate_tab._policies["nano"] = LocalPolicy.load(str(tiny_gemma_path), name="nano", base_warning=warning)
    sid = "nanoAAAAAA15"
    try:
        stream = _generate("A poster of a fox", sid, policy="nano")
        run = None
        deadline = time.time() + 120
        while time.time() < deadline:
            next(stream)
            run = live_runs.registry().current(sid)
            if "round 1" in (run.value("events") or ""):
                break
        events = run.value("events")
        assert events.index("no adapter in assets/adapters/nano") < events.index("round 1")
        generate_tab.stop_run(sid)
        _drain(stream)
        events = _wait_done(sid).value("events")
        assert events.count("no adapter in assets/adapters/nano") == 1, "the warning is shown once, not again"
    finally:
        generate_tab._policies.pop("nano", None)


def test_bench_loading_errors_are_shown_and_search_filters_words():
    from app import bench_tab

    import gradio as gr

    cases, *_, error = bench_tab.load_cases("/no/such/bench.jsonl")
    assert cases == gr.skip(), "a wrong path must not throw away the cases already loaded"
    assert "Could not load this bench" in error and "bench not found" in error
    cases, *_, error = bench_tab.load_cases("mini")
    assert error == "" and len(cases) == 38
    rows, count = bench_tab.filter_rows(cases, "any", "any", "any", "opera")
    assert count == "1 of 38 cases" and "Opera" in rows[0][4]


def test_policy_spec_keeps_the_adapter_when_the_base_already_has_options():
    from genevolve.service import compose_policy_spec

    assert compose_policy_spec("nano?4bit=1", False, "/a/b") == "nano?4bit=1&adapter=/a/b"
    assert compose_policy_spec("nano", True, "/a/b") == "nano?4bit=1&adapter=/a/b"
    assert compose_policy_spec("hf:/m?4bit=1", False, "/x") == "hf:/m?4bit=1&adapter=/x"
    assert compose_policy_spec("planner", True, "/x") == "planner"
    assert compose_policy_spec("openai:m@http://127.0.0.1:9/v1", True, "/x") == "openai:m@http://127.0.0.1:9/v1"
