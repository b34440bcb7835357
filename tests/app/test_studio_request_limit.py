"""The studio answers an over-long request with the library's own limit and words (the CLI says the
same), starts no run, and the page does not grow with the pasted text. Real chromium, real studio."""

from __future__ import annotations

import sqlite3

import pytest

pytest.register_assert_rewrite("helpers.studio_server")
from helpers.studio_server import browser, open_studio  # noqa: E402

pytest_plugins = ["helpers.studio_server"]
pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


def test_a_request_over_the_limit_is_refused_with_the_librarys_message(light_studio):
    from genevolve.program import MAX_REQUEST_CHARS, request_problem

    url, home = light_studio
    text = ("a red kite over a beach " * 834).strip()  # 20,015 characters, the size that once ran for 20 s
    expected = request_problem(text)
    assert expected and f"{MAX_REQUEST_CHARS:,}" in expected
    with browser() as b:
        page = b.new_page(viewport={"width": 1440, "height": 1000})
        open_studio(page, url)
        page.fill("#ge-request textarea", text)
        page.click("#ge-go")
        page.wait_for_function("(m) => document.querySelector('#ge-status').innerText.includes(m)",
                               arg=f"at most {MAX_REQUEST_CHARS:,}", timeout=30_000)
        status = page.locator("#ge-status").inner_text()
        assert f"{len(text):,} characters" in status
        # The request box scrolls inside itself: the page stays about one screen, not ~7,700 px.
        assert page.evaluate("() => document.body.scrollHeight") < 2600
    db = sqlite3.connect(home / "genevolve.db")
    try:
        longest = db.execute("SELECT max(length(request)) FROM runs").fetchone()[0]
    finally:
        db.close()
    assert longest is None or longest <= MAX_REQUEST_CHARS
