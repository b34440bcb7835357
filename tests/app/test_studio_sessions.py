"""Sessions are isolated: two browsers at once never see each other's runs or images.

The first tests call the studio's handlers in-process against a real store; the last drives
two real browser contexts (separate localStorage, so separate sessions) against `python app.py`.
"""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import pytest

pytest.register_assert_rewrite("helpers.studio_server")  # it is also loaded as a plugin below
from helpers.studio_server import browser, shot  # noqa: E402

# The studio fixtures (studio, light_studio, slow_endpoint) are shared by both studio test modules.
pytest_plugins = ["helpers.studio_server"]


def _run(request_text: str, sid: str):
    from app import generate_tab
    from genevolve.service import GenerateForm

    last = None
    for out in generate_tab.run_generate(GenerateForm(request=request_text), sid):
        last = out
    return last


def test_session_ids_and_folders_are_safe(tmp_path):
    from app import sessions

    assert sessions.session_id("abcdef123456") == "abcdef123456"
    # A forged id (path traversal, markup) is never used: the connection's hash is used instead.
    assert sessions.session_id("../../etc", SimpleNamespace(session_hash="hash1234")) == "hash1234"
    assert sessions.session_id("<script>", None) == "anonymous"
    with pytest.raises(ValueError):
        sessions.session_dir("../x")
    a, b = sessions.session_dir("sessA1234", "runs"), sessions.session_dir("sessB1234", "runs")
    assert a != b and a.parent.name == "sessA1234"


@pytest.mark.slow
def test_history_and_run_loading_stay_inside_a_session(tmp_path, monkeypatch):
    from app import generate_tab

    # A studio settings file: rank library images by BM25 alone (no embedding model to load here).
    cfg = tmp_path / "studio.yaml"
    cfg.write_text("extra:\n  library_embeddings: false\n")
    monkeypatch.setenv("GENEVOLVE_STUDIO_CONFIG", str(cfg))
    out_a = _run('A sign that reads "ALPHA"', "sessionAAAA1")
    out_b = _run('A sign that reads "BRAVO"', "sessionBBBB2")
    hist_a, hist_b = out_a["history"], out_b["history"]
    assert [r[2] for r in hist_a] == ['A sign that reads "ALPHA"']
    assert [r[2] for r in hist_b] == ['A sign that reads "BRAVO"']
    assert "sessionAAAA1" in out_a["image"] and "sessionBBBB2" in out_b["image"]  # rendered image paths
    # B cannot open A's run by its id.
    evt = SimpleNamespace(row_value=hist_a[0])
    denied = generate_tab.load_run("sessionBBBB2", evt)
    assert denied[0] == "Run not found in this session." and denied[3] is None
    allowed = generate_tab.load_run("sessionAAAA1", evt)
    assert "ALPHA" in allowed[2] and allowed[3].endswith("image.png")


@pytest.mark.slow
def test_uploaded_references_are_the_sessions_own_user_images(tmp_path, monkeypatch):
    from skimage import data
    from PIL import Image

    from app import generate_tab, storage
    from genevolve.service import GenerateForm

    cfg = tmp_path / "studio.yaml"
    cfg.write_text("extra:\n  library_embeddings: false\n")
    monkeypatch.setenv("GENEVOLVE_STUDIO_CONFIG", str(cfg))
    upload = tmp_path / "my_cat.png"
    Image.fromarray(data.chelsea()).save(upload)
    last = None
    form = GenerateForm(request='A birthday card of my cat, text "HAPPY 5"', uploads=[str(upload)])
    for out in generate_tab.run_generate(form, "uploaderCCC3"):
        last = out
    run = storage.store().get_run(last["history"][0][0])
    images = run["trajectory"]["images"]
    assert images[0]["source"] == "user" and images[0]["img_id"] == "IMG_001"
    assert "/sessions/uploaderCCC3/uploads/" in images[0]["path"]
    # The upload is the first reference of the program, cited by ordinal only.
    assert run["program"]["reference_images"][0]["img_id"] == "IMG_001"
    assert "IMG_001" not in run["program"]["gen_prompt"]


def test_stop_flag_belongs_to_one_session():
    from app import generate_tab, sessions

    flag_a = sessions.cancel_event("stopA12345", fresh=True)
    flag_b = sessions.cancel_event("stopB12345", fresh=True)
    generate_tab.stop_run("stopA12345")
    assert flag_a.is_set() and not flag_b.is_set()


@pytest.mark.browser
@pytest.mark.timeout(200)
def test_two_browsers_at_once_do_not_cross_talk(light_studio):
    url, home = light_studio
    titles = {"a": "NORTH STAR", "b": "SOUTH WIND"}
    pages, errors = {}, []
    with browser() as b:
        for key in titles:
            ctx = b.new_context(viewport={"width": 1440, "height": 1000})
            page = ctx.new_page()
            page.goto(url)
            page.wait_for_selector("#ge-session code", timeout=60_000)
            pages[key] = page
        sids = {k: p.locator("#ge-session code").inner_text().strip() for k, p in pages.items()}
        assert sids["a"] != sids["b"]
        for key, page in pages.items():
            page.fill("#ge-request textarea", f'A concert poster of a horse under the moon, headline "{titles[key]}"')
        # Submit both before either finishes: the queue runs them, the pages must not mix.
        for page in pages.values():
            page.click("#ge-go")

        def wait(key):
            try:
                pages[key].wait_for_selector("#ge-verify .ge-found", timeout=150_000)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(f"{key}: {exc}")

        # Playwright's sync API is not thread-safe: wait for each page in turn (both already run).
        wait("a")
        wait("b")
        assert not errors, errors
        for key, page in pages.items():
            other = titles["b" if key == "a" else "a"]
            for sel in ("#ge-events", "#ge-program", "#ge-verify", "#ge-status"):
                text = page.locator(sel).inner_text()
                assert other not in text, f"{key} sees the other session's run in {sel}"
            assert titles[key] in page.locator("#ge-verify").inner_text()
            page.locator("#ge-generate .label-wrap", has_text="Your runs").click()
            page.wait_for_selector("#ge-history [data-testid='cell-0-2']", timeout=30_000)
            history = page.locator("#ge-history").inner_text()
            assert titles[key] in history and other not in history
            # The Inspector (annotators' view) lists this browser's runs, never the other's.
            page.get_by_role("tab", name="Inspector").click()
            page.wait_for_selector("#in-table [data-testid='cell-0-2']", timeout=30_000)
            listed = page.locator("#in-table").inner_text()
            assert titles[key] in listed and other not in listed
            page.get_by_role("tab", name="Generate").click()
        shot(pages["a"], "session_a")
        shot(pages["b"], "session_b")
        # A reload keeps the session (the id lives in the browser) and so its history.
        pages["a"].reload()
        pages["a"].wait_for_selector("#ge-session code", timeout=60_000)
        assert pages["a"].locator("#ge-session code").inner_text().strip() == sids["a"]
    db = sqlite3.connect(home / "genevolve.db")
    rows = db.execute("SELECT session, request, image_path FROM runs").fetchall()
    db.close()
    by_session = {}
    for session, request, image in rows:
        by_session.setdefault(session, []).append((request, image))
    for key, sid in sids.items():
        (request, image), = by_session[sid]
        assert titles[key] in request and f"/sessions/{sid}/" in image

