"""The studio end to end in a real browser: Debian's chromium driven by Playwright against `python app.py`.

One studio process serves the whole module (started by the ``studio`` fixture on a free port
with a private GENEVOLVE_HOME). Screenshots of every tab go to test-artifacts/.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

pytest.register_assert_rewrite("helpers.studio_server")  # it is also loaded as a plugin below
from helpers.studio_server import add_sample_guide, browser, open_studio, session_of, shot  # noqa: E402

# The studio fixtures (studio, light_studio, slow_endpoint) are shared by both studio test modules.
pytest_plugins = ["helpers.studio_server"]

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

TITLE = "MOON CAT"
REQUEST = f'A retro travel poster of a cat sitting next to a rocket, title "{TITLE}" in bold serif'

# Records, for every DOM change, how many tool-call cards the live panel shows and whether the
# rendered image is there yet, with a timestamp relative to the click on Generate.
RECORDER = """() => {
  window.__ge = {t0: performance.now(), marks: []};
  const snap = () => window.__ge.marks.push({
    t: performance.now() - window.__ge.t0,
    calls: document.querySelectorAll('#ge-events .ge-ev-tool_call').length,
    events: document.querySelectorAll('#ge-events .ge-ev').length,
    image: !!document.querySelector('#ge-image img'),
    done: !!document.querySelector('#ge-events .ge-ev-done'),
  });
  new MutationObserver(snap).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""




def _tab(page, name):
    page.get_by_role("tab", name=name).click()


def _click_first_row(page, table_id):
    cell = page.locator(f"#{table_id} [data-testid='cell-0-0']")
    cell.wait_for(timeout=30_000)
    cell.click()


def _rows(page, table_id) -> int:
    return page.locator(f"#{table_id} [role='row'][data-index]").count()


def _runs(home):
    db = sqlite3.connect(home / "genevolve.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT id, session, request, termination, verified_ok, image_path FROM runs")]
    finally:
        db.close()


def test_generate_streams_renders_and_verifies(studio):
    url, home = studio
    with browser() as b:
        page = b.new_page(viewport={"width": 1440, "height": 1000})
        open_studio(page, url)
        page.fill("#ge-request textarea", REQUEST)
        page.evaluate(RECORDER)
        page.click("#ge-go")
        page.wait_for_selector("#ge-verify .ge-found", timeout=150_000)
        page.wait_for_selector("#ge-downloads a, #ge-downloads .file-preview", timeout=30_000)
        marks = page.evaluate("() => window.__ge.marks")

        # The verification report found the quoted title by OCR.
        found = page.locator("#ge-verify .ge-found").first.inner_text()
        assert TITLE in found
        # Tool calls streamed in while the run was going: the panel showed a first tool call
        # (and then more) before the run ended and before the image was rendered.
        with_calls = [m for m in marks if m["calls"] > 0]
        assert with_calls, "no tool-call event was ever shown"
        first = with_calls[0]
        final_calls = page.locator("#ge-events .ge-ev-tool_call").count()
        assert final_calls >= 2
        assert not first["image"] and not first["done"], "the first tool call appeared only with the final result"
        image_at = min(m["t"] for m in marks if m["image"])
        assert first["t"] < image_at
        # The side panel shows each kind of step, the gallery the library images with IMG ids.
        assert page.locator("#ge-events .ge-ev-tool_result").count() >= 2
        assert page.locator("#ge-events .ge-ev-thinking").count() >= 1
        assert "IMG_001" in page.locator("#ge-events").inner_text()
        # The program: gen_prompt with ordinal references linked to their thumbnails; constraints.
        program = page.locator("#ge-program")
        assert TITLE in program.inner_text()
        if program.locator(".ge-ordref").count():
            href = program.locator(".ge-ordref").first.get_attribute("href")
            assert program.locator(href).count() == 1
        assert "derived constraints" in program.inner_text().lower()
        downloads = page.locator("#ge-downloads").inner_text().replace("\n", "")
        assert "program.json" in downloads and "trajectory.json" in downloads and "image.png" in downloads
        shot(page, "generate", docs=True)

        # The run is in the store under this browser's session, with its image and a passed check.
        sid = session_of(page)
        mine = [r for r in _runs(home) if r["session"] == sid]
        assert len(mine) == 1 and mine[0]["request"] == REQUEST
        assert mine[0]["verified_ok"] == 1 and str(home) in mine[0]["image_path"]
        assert sid in mine[0]["image_path"]  # images live in the session's own folder


def test_thinking_streams_live_and_stop_cancels(light_studio, slow_endpoint):
    url, home = light_studio
    with browser() as b:
        page = b.new_page(viewport={"width": 1440, "height": 1000})
        open_studio(page, url)
        page.fill("#ge-request textarea", 'A poster of two horses on a beach with the words "SEA RUN"')
        page.locator("#ge-backends").click()
        policy = page.locator("#ge-policy input")
        policy.fill(f"openai:slow@{slow_endpoint}")
        policy.press("Enter")
        page.evaluate(RECORDER)
        page.click("#ge-go")
        # Thinking text is shown while it is being written (the live card with a caret)...
        page.wait_for_selector("#ge-events .ge-live", timeout=60_000)
        # ...then tool calls, one by one.
        page.wait_for_function("() => document.querySelectorAll('#ge-events .ge-ev-tool_call').length >= 2",
                               timeout=60_000)
        t_call = page.evaluate("() => performance.now() - window.__ge.t0")
        page.click("#ge-stop")
        page.wait_for_selector("#ge-events .ge-ev-done", timeout=60_000)
        t_done = page.evaluate("() => performance.now() - window.__ge.t0")
        assert "cancelled" in page.locator("#ge-events .ge-ev-done").inner_text()
        page.wait_for_function("() => document.querySelector('#ge-status').innerText.includes('cancelled')",
                               timeout=30_000)
        assert not page.locator("#ge-image img").count(), "a cancelled run must not render"
        assert t_done > t_call
        # The two tool calls arrived as the endpoint streamed them, not together.
        marks = page.evaluate("() => window.__ge.marks")
        first_at = min(m["t"] for m in marks if m["calls"] >= 1)
        second_at = min(m["t"] for m in marks if m["calls"] >= 2)
        assert second_at - first_at > 200, (first_at, second_at)
        shot(page, "generate_stopped")
        sid = session_of(page)
        runs = [r for r in _runs(home) if r["session"] == sid]
        assert [r["termination"] for r in runs] == ["cancelled"]


def test_every_tab_does_its_main_job(light_studio):
    url, home = light_studio
    with browser() as b:
        page = b.new_page(viewport={"width": 1440, "height": 1000})
        open_studio(page, url)
        # Training: start a CPU SFT job from the tiny config; it boots while the other tabs are used.
        _tab(page, "Training")
        page.wait_for_selector("#tr-start", timeout=30_000)
        assert "sft_tiny_cpu.yaml" in page.locator("#tr-config input").input_value()
        page.fill("#tr-max-steps input", "300")
        page.click("#tr-start")
        page.wait_for_function("() => document.querySelector('#tr-msg').innerText.includes('Started job')",
                               timeout=30_000)

        # Generate: a run of our own to judge and inspect.
        _tab(page, "Generate")
        page.fill("#ge-request textarea", 'A bakery shop sign with the word "FRESH"')
        page.click("#ge-go")
        page.wait_for_selector("#ge-verify .ge-found", timeout=120_000)

        # Judge: pick our run, score it with the local OCR verifier (no key).
        _tab(page, "Judge")
        page.locator("#ju-pick input").click()
        page.get_by_role("option").first.click()
        page.wait_for_function("() => document.querySelector('#ju-question textarea').value.includes('FRESH')",
                               timeout=30_000)
        page.click("#ju-go")
        page.wait_for_selector("#ju-card .ge-scorecard", timeout=60_000)
        assert page.locator("#ju-card [data-dim='text_accuracy'] b").inner_text() == "1.00"
        shot(page, "judge", docs=True)

        # Inspector: our runs are listed; open one, audit it, export accepted as SFT.
        _tab(page, "Inspector")
        page.wait_for_selector("#in-table [data-testid='cell-0-0']", timeout=30_000)
        _click_first_row(page, "in-table")
        page.wait_for_selector("#in-timeline .ge-ev-step", timeout=30_000)
        page.click("#in-save")
        page.wait_for_selector("#in-audits .ge-v-accept", timeout=30_000)
        page.click("#in-export")
        page.wait_for_function("() => document.querySelector('#in-export-msg').innerText.includes('Exported')",
                               timeout=30_000)
        shot(page, "inspector", docs=True)
        exported = list(home.glob("studio/sessions/*/exports/*/sft.jsonl"))
        assert len(exported) == 1
        record = json.loads(exported[0].read_text().splitlines()[0])
        assert record["messages"][0]["role"] == "system" and "images" in record

        # Training again, after a reload: the job outlived the page; its loss curve is drawn; stop, resume, stop.
        page.reload()
        page.wait_for_selector("#ge-session code", timeout=60_000)
        _tab(page, "Training")
        try:
            page.wait_for_selector("#tr-loss .js-plotly-plot", timeout=150_000)
        except Exception:
            raise AssertionError("no loss curve; job log:\n" + "\n".join(
                p.read_text()[-2000:] for p in home.glob("jobs/*/log.txt")))
        assert "running" in page.locator("#tr-status").inner_text()
        # The log follows new output: once it holds more than fits, its last line is in view.
        page.wait_for_function("() => { const t = document.querySelector('#ge-log textarea'); "
                               "return t && t.scrollHeight > t.clientHeight + 20; }", timeout=120_000)
        page.wait_for_function("() => { const t = document.querySelector('#ge-log textarea'); "
                               "return t.scrollTop + t.clientHeight >= t.scrollHeight - 4; }", timeout=10_000)
        shot(page, "training", docs=True)
        page.click("#tr-stop")
        page.wait_for_function("() => document.querySelector('#tr-msg').innerText.includes('stopped')",
                               timeout=60_000)
        page.wait_for_function("() => document.querySelector('#tr-status').innerText.includes('stopped')",
                               timeout=30_000)
        page.click("#tr-resume")
        page.wait_for_function("() => document.querySelector('#tr-msg').innerText.includes('resumed')",
                               timeout=30_000)
        page.wait_for_function("() => document.querySelector('#tr-status').innerText.includes('running')",
                               timeout=30_000)
        page.click("#tr-stop")
        page.wait_for_function("() => document.querySelector('#tr-msg').innerText.includes('stopped')",
                               timeout=60_000)

        # Bench: run one case in the background; meanwhile search, open a case and send it to Generate.
        _tab(page, "Bench")
        page.wait_for_selector("#be-table [data-testid='cell-0-0']", timeout=30_000)
        assert _rows(page, "be-table") >= 2
        page.locator("#tab-bench input[type=number]").first.fill("1")
        page.click("#be-bench-run")
        page.wait_for_function("() => document.querySelector('#be-bench-msg').innerText.includes('running')",
                               timeout=30_000)
        page.fill("#be-search textarea, #be-search input", "opera")
        page.press("#be-search textarea, #be-search input", "Enter")
        page.wait_for_function("() => document.querySelector('#be-count').innerText.startsWith('1 of')",
                               timeout=30_000)
        _click_first_row(page, "be-table")
        page.wait_for_selector("#be-case h3", timeout=30_000)
        question = page.locator("#be-case .ge-prompt").inner_text()
        assert "Opera" in question
        page.click("#be-run")
        page.wait_for_function("(q) => document.querySelector('#ge-request textarea').value === q", arg=question,
                               timeout=30_000)
        assert page.get_by_role("tab", name="Generate").get_attribute("aria-selected") == "true"
        _tab(page, "Bench")
        page.wait_for_selector("#be-summary-msg strong", timeout=120_000)
        assert "overall" in page.locator("#be-summary-msg").inner_text()
        page.wait_for_selector("#be-chart .js-plotly-plot", timeout=30_000)
        shot(page, "bench", docs=True)

        # Decision Guides: the buffer is listed; a query shows the retrieved guide, cosine and gate.
        add_sample_guide(home)
        _tab(page, "Decision Guides")
        page.wait_for_selector("#gu-list .ge-guide", timeout=30_000)
        assert "poster with an exact headline" in page.locator("#gu-list").inner_text()
        query = 'A poster with the exact headline "SUMMER SALE"'
        page.fill("#gu-query textarea", query)
        page.click("#gu-ask")
        page.wait_for_selector("#gu-answer .ge-guide .ge-chip", timeout=90_000)
        chip = page.locator("#gu-answer .ge-chip").first.inner_text()
        # The chip must carry the verdict the real buffer gives for this query, not either one.
        from genevolve.store import Store
        from genevolve.training.sdl import retrieve_guide

        _, cosine, passes = retrieve_guide(query, Store(home / "genevolve.db"))
        assert f"cosine {cosine:.3f}" in chip, chip
        assert ("passes the gate" if passes else "below the gate") in chip, (chip, cosine, passes)
        shot(page, "guides", docs=True)
