"""The studio keeps a user's work, in a real browser (Debian's chromium + Playwright against `python app.py`).

A reload mid-run re-attaches to the run (it is not cancelled) and brings back the request, the
uploaded image and the backend choices; uploads are images within a size limit; the Inspector
shows the program and image an annotator approves and exports by verdict; and the small things
seen while using it (search as you type, a wrong bench path, sending a case with its images,
the Downloads list, checkboxes, the upload label, the placeholder, backend hints, fail-fast
diffusers).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

pytest.register_assert_rewrite("helpers.studio_server")  # it is also loaded as a plugin below
from helpers.studio_server import browser, open_studio, session_of, shot, wait_or_explain  # noqa: E402

pytest_plugins = ["helpers.studio_server"]

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]




def _runs(home, sid):
    db = sqlite3.connect(home / "genevolve.db")
    try:
        return db.execute("SELECT id, termination, source FROM runs WHERE session=?", (sid,)).fetchall()
    finally:
        db.close()


def _cat(tmp_path) -> Path:
    from PIL import Image
    from skimage import data

    path = tmp_path / "my_cat.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


def _shows(page, selector, text, timeout=30_000):
    """Wait until an element's text (whitespace removed: file names are split into name and extension) has text."""
    page.wait_for_function("([s, t]) => { const e = document.querySelector(s); "
                           "return !!e && e.innerText.replace(/\\s/g, '').includes(t.replace(/\\s/g, '')); }",
                           arg=[selector, text], timeout=timeout)


def _has(page, selector, text) -> bool:
    return text.replace(" ", "") in "".join(page.locator(selector).inner_text().split())


def _choose(page, elem_id, value):
    box = page.locator(f"#{elem_id} input")
    box.fill(value)
    box.press("Enter")


def test_reload_mid_run_reattaches_and_keeps_the_form(light_studio, slow_endpoint, tmp_path):
    url, home = light_studio
    request = 'A poster of two horses on a beach with the words "SEA RUN"'
    policy = f"openai:slow@{slow_endpoint}"
    with browser() as b:
        page = b.new_page(viewport={"width": 1440, "height": 1000})
        open_studio(page, url)
        sid = session_of(page)
        page.fill("#ge-request textarea", request)
        page.set_input_files("#ge-uploads input[type=file]", [str(_cat(tmp_path))])
        _shows(page, "#ge-uploads", "my_cat.png")
        page.locator("#ge-backends").click()
        _choose(page, "ge-policy", policy)
        page.fill("#ge-seed input", "3")
        page.locator("#ge-seed input").blur()
        page.click("#ge-go")
        wait_or_explain(page, "#ge-events .ge-ev-tool_call", home)
        calls_before = page.locator("#ge-events .ge-ev-tool_call").count()

        page.reload()
        page.wait_for_selector("#ge-session code", timeout=60_000)
        assert session_of(page) == sid
        # The form came back: request, image, backend choices.
        page.wait_for_function("(r) => document.querySelector('#ge-request textarea').value === r", arg=request,
                               timeout=30_000)
        _shows(page, "#ge-uploads", "my_cat.png")
        page.locator("#ge-backends").click()
        assert page.locator("#ge-policy input").input_value() == policy
        assert page.locator("#ge-seed input").input_value() == "3"
        # The run was not cancelled: the page follows it again, from what it had already done, to its end.
        page.wait_for_function("(n) => document.querySelectorAll('#ge-events .ge-ev-tool_call').length >= n",
                               arg=calls_before, timeout=60_000)
        # While it goes, Generate looks busy (as it does before a reload), and it cannot be pressed.
        page.wait_for_selector("#ge-go.ge-busy", timeout=30_000)
        assert page.locator("#ge-go").get_attribute("aria-disabled") == "true"
        page.wait_for_selector("#ge-events .ge-ev-done", timeout=120_000)
        page.wait_for_selector("#ge-go:not(.ge-busy)", timeout=60_000)
        assert "cancelled" not in page.locator("#ge-events .ge-ev-done").inner_text()
        page.wait_for_selector("#ge-verify .ge-report", timeout=60_000)
        assert "SEA RUN" in page.locator("#ge-program").inner_text()
        shot(page, "reload_reattached")
        (run,) = _runs(home, sid)
        assert run[1] == "answer" and run[2] == "studio"

        # A reload after the end shows the result, not a blank page.
        page.reload()
        page.wait_for_selector("#ge-verify .ge-report", timeout=60_000)
        assert "SEA RUN" in page.locator("#ge-program").inner_text()
        assert page.locator("#ge-image img").count() == 1


def test_what_a_user_types_while_the_page_loads_is_kept_and_runs(light_studio):
    """The page restores the session's form after it loads. A restore that came after the first
    keystrokes wiped the request (and a chosen backend), and Generate then said "Write a request
    first": the first CI run of the reload test above fell into it. Typing at once must stick."""
    url, home = light_studio
    request = "Three apples in a bowl on a kitchen table."
    with browser() as b:
        page = b.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#ge-request textarea", timeout=60_000)
        page.fill("#ge-request textarea", request)  # before the session line: the restore is still to come
        page.wait_for_selector("#ge-session code", timeout=30_000)
        page.wait_for_timeout(500)
        assert page.locator("#ge-request textarea").input_value() == request
        sid = session_of(page)
        page.click("#ge-go")
        wait_or_explain(page, "#ge-events .ge-ev-done", home)
        assert "Write a request first" not in page.locator("#ge-status").inner_text()
    runs = _runs(home, sid)
    assert len(runs) == 1 and runs[0][1] == "answer"


def test_uploads_are_images_within_a_size_limit(light_studio, tmp_path):
    url, _ = light_studio
    huge = tmp_path / "holiday.png"
    with open(huge, "wb") as f:  # 300 MB of nothing, named like a photo (sparse: no disk is filled)
        f.truncate(300 * 1024 * 1024)
    fake = tmp_path / "notes.png"
    fake.write_text("plain text, whatever the name says")
    with browser() as b:
        page = b.new_page(viewport={"width": 1440, "height": 1000})
        open_studio(page, url)
        page.set_input_files("#ge-uploads input[type=file]", [str(huge)])
        page.wait_for_selector("text=exceed the maximum allowed size", timeout=30_000)
        assert not _has(page, "#ge-uploads", "holiday.png")
        page.set_input_files("#ge-uploads input[type=file]", [str(fake)])
        page.wait_for_function("() => document.querySelector('#ge-upload-msg').innerText.includes('not an image')",
                               timeout=30_000)
        assert not _has(page, "#ge-uploads", "notes.png")
        shot(page, "upload_refused")
        # A later upload that is fine replaces the refusals: nothing about the old files stays on screen.
        page.set_input_files("#ge-uploads input[type=file]", [str(_cat(tmp_path))])
        _shows(page, "#ge-uploads", "my_cat.png")
        page.wait_for_function("() => document.querySelector('#ge-upload-msg').innerText.trim() === ''",
                               timeout=30_000)
        assert not page.locator("text=exceed the maximum allowed size").is_visible()
        assert "not an image" not in page.locator("body").inner_text()


def _overlap(a, b) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def _luminance(rgb: str) -> float:
    vals = [int(v) / 255 for v in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3]]
    lin = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in vals]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_the_small_things(light_studio):
    from app.generate_tab import EXAMPLES

    url, home = light_studio
    with browser() as b:
        for width in (1440, 760, 520):  # the upload label never covers the upload icon
            page = b.new_page(viewport={"width": width, "height": 1000})
            open_studio(page, url)
            label = page.locator("#ge-uploads [data-testid='block-label']").bounding_box()
            icon = page.locator("#ge-uploads [data-testid='upload-icon']").bounding_box()
            assert not _overlap(label, icon), (width, label, icon)
            page.close()
        page = b.new_page(viewport={"width": 1440, "height": 1000})
        open_studio(page, url)
        # The placeholder reads as a hint, not as a request someone typed.
        box = page.locator("#ge-request textarea")
        placeholder = box.get_attribute("placeholder")
        assert placeholder not in EXAMPLES and placeholder.startswith("Describe")
        style = page.evaluate("() => { const s = getComputedStyle(document.querySelector('#ge-request textarea'), "
                              "'::placeholder'); return [s.fontStyle, s.color]; }")
        assert style[0] == "italic"
        # Unchecked checkboxes are visible: their border stands out from the panel (contrast >= 3:1).
        page.locator("#ge-backends").click()
        page.wait_for_selector("#ge-typeset input[type=checkbox]", state="visible", timeout=30_000)  # rendered on open
        border, background = page.evaluate(
            "() => { const e = document.querySelector('#ge-typeset input[type=checkbox]'); const s = getComputedStyle(e);"
            " return [s.borderTopColor, getComputedStyle(e.closest('.block')).backgroundColor]; }")
        assert not page.locator("#ge-typeset input[type=checkbox]").is_checked()
        lighter, darker = sorted((_luminance(border), _luminance(background)), reverse=True)
        assert (lighter + 0.05) / (darker + 0.05) >= 3.0, (border, background)
        # The hint under Policy describes the chosen policy.
        policy_block = page.locator("#ge-policy")
        assert "planner" in policy_block.inner_text()
        _choose(page, "ge-policy", "nano")
        page.wait_for_function("() => document.querySelector('#ge-policy').innerText.includes('270M')", timeout=30_000)
        hint = policy_block.inner_text()
        # This checkout ships the trained adapter: the hint says so, and its model card shows in Backends.
        assert "LoRA adapter" in hint and "untrained" not in hint and "rule-based" not in hint
        page.wait_for_selector("#ge-nano-card", state="visible", timeout=30_000)
        assert "GenEvolve-Nano" in page.locator("#ge-nano-card").inner_text()
        _choose(page, "ge-policy", "planner")
        page.wait_for_selector("#ge-nano-card", state="hidden", timeout=30_000)
        # diffusers without weights, offline: a message with how to get them in seconds, no planning first.
        _choose(page, "ge-renderer", "diffusers:someone/not-downloaded-model")
        page.wait_for_function("() => document.querySelector('#ge-renderer').innerText.includes('on disk')",
                               timeout=30_000)
        page.fill("#ge-request textarea", "A red fox in the snow")
        page.click("#ge-go")
        page.wait_for_function("() => document.querySelector('#ge-status').innerText.includes('hf download')",
                               timeout=15_000)
        assert page.locator("#ge-events .ge-ev-round_start").count() == 0
        _choose(page, "ge-renderer", "layout")

        # Bench: search filters as you type; a wrong path says so; a case goes to Generate with its images.
        page.get_by_role("tab", name="Bench").click()
        page.wait_for_selector("#be-table [data-testid='cell-0-0']", timeout=30_000)
        page.locator("#be-search textarea, #be-search input").press_sequentially("opera", delay=40)
        page.wait_for_function("() => document.querySelector('#be-count').innerText.startsWith('1 of')",
                               timeout=30_000)
        source = page.locator("#be-source textarea, #be-source input")
        source.fill("/no/such/bench.jsonl")
        page.click("#be-load")
        page.wait_for_function("() => document.querySelector('#be-error').innerText.includes('bench not found')",
                               timeout=30_000)
        # The count keeps the loaded cases (Gradio may still show its progress timer above it).
        page.wait_for_function("() => /(^|\\n)1 of 38 cases/.test(document.querySelector('#be-count').innerText)",
                               timeout=30_000)
        shot(page, "bench_wrong_path")
        source.fill("mini")
        page.click("#be-load")
        page.wait_for_function("() => document.querySelector('#be-error').innerText.trim() === ''", timeout=30_000)
        search = page.locator("#be-search textarea, #be-search input")
        search.fill("")
        search.press_sequentially("under a wooden chair", delay=20)
        page.wait_for_function("() => document.querySelector('#be-count').innerText.startsWith('1 of')",
                               timeout=30_000)
        page.locator("#be-table [data-testid='cell-0-0']").click()
        page.wait_for_selector("#be-case h3", timeout=30_000)
        page.click("#be-run")
        page.wait_for_function("() => document.querySelector('#ge-request textarea').value.includes('wooden chair')",
                               timeout=30_000)
        _shows(page, "#ge-uploads", "chelsea_the_cat.jpg")

        # Generate that case: the Downloads list shows its last row in full.
        page.click("#ge-go")
        page.wait_for_selector("#ge-verify .ge-report", timeout=150_000)
        _shows(page, "#ge-downloads", "image.png")
        # The last row (image.png) lies inside every box that could clip it.
        # Polled, not read once: Gradio may re-render the file list between the text check above and this read.
        clipped = page.wait_for_function(
            "() => { const rows = [...document.querySelectorAll('#ge-downloads tr')].filter(r => r.innerText.trim());"
            " if (rows.length < 3) return null;"
            " const last = rows[rows.length - 1]; const r = last.getBoundingClientRect(); const out = [];"
            " for (let p = last.parentElement; p; p = p.parentElement) { const s = getComputedStyle(p);"
            " if (['auto', 'scroll', 'hidden'].includes(s.overflowY)) { const b = p.getBoundingClientRect();"
            " if (r.bottom > b.bottom + 0.5) out.push(p.className || p.tagName); }"
            " if (p.id === 'ge-downloads') break; } return [rows.length, last.innerText, out]; }",
            timeout=30_000).json_value()
        n_rows, last_text, clipping = clipped
        assert n_rows == 3 and "image" in last_text and clipping == [], clipped
        sid = session_of(page)
        run = json.loads(sqlite3.connect(home / "genevolve.db").execute(
            "SELECT trajectory FROM runs WHERE session=? ORDER BY created_at DESC", (sid,)).fetchone()[0])
        assert [i["source"] for i in run["images"] if i["img_id"] == "IMG_001"] == ["user"]
        assert run["images"][0]["title"] == "chelsea_the_cat.jpg"


def _bench_into(home: Path) -> Path:
    """A real bench run of one case (planner · layout · local judge) where the studio looks for bench runs."""
    import os
    import subprocess

    out = home / "bench" / "for-annotators"
    if (out / "summary.json").is_file():  # the studio is shared by this module's tests: one run serves all
        return out
    cfg = home / "studio.yaml"
    env = dict(os.environ, GENEVOLVE_HOME=str(home))
    result = subprocess.run([sys.executable, "-m", "genevolve.cli", "bench", "run", "--bench", "mini", "--out", str(out),
                             "--limit", "1", "--offline", "--no-progress", "--config", str(cfg)],
                            cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


def test_inspector_audits_bench_runs_with_program_and_image_and_exports_by_verdict(light_studio):
    url, home = light_studio
    _bench_into(home)
    with browser() as b:
        page = b.new_page(viewport={"width": 1440, "height": 1100})
        open_studio(page, url)
        page.get_by_role("tab", name="Inspector").click()
        page.locator("#in-source input").click()
        page.get_by_role("option", name="bench runs").click()
        page.wait_for_function("() => document.querySelector('#in-table').innerText.includes('Sydney Opera House')",
                               timeout=60_000)
        listed = page.locator("#in-table").inner_text()
        assert "bench" in listed and "studio" not in listed.replace("studio (browsers)", "")
        page.locator("#in-table [data-testid='cell-0-0']").click()
        answer = page.locator("#in-timeline .ge-ev-step").last
        answer.wait_for(timeout=30_000)
        # The answer step shows what an annotator approves: gen_prompt, references, the rendered image.
        assert "gen_prompt" in answer.inner_text().lower() and "Opera House" in answer.inner_text()
        assert answer.locator(".ge-program").count() == 1
        assert answer.locator("img.ge-rendered").evaluate("e => e.naturalWidth") > 0

        # Step 1 needs a fix; without one, export leaves the trajectory out and says so.
        page.locator("#in-step input").click()
        page.get_by_role("option").nth(1).click()
        page.locator("#in-verdict").get_by_label("needs fix", exact=True).check()
        page.fill("#in-comment textarea", "search the harbour view first")
        page.click("#in-save")
        page.wait_for_selector("#in-audits .ge-v-needs_fix", timeout=30_000)
        page.locator("#in-step input").click()
        page.get_by_role("option", name="whole trajectory").click()
        page.locator("#in-verdict").get_by_label("accept", exact=True).check()
        page.click("#in-save")
        page.wait_for_selector("#in-audits .ge-v-accept", timeout=30_000)
        page.click("#in-export")
        page.wait_for_function("() => document.querySelector('#in-export-msg').innerText.includes('left out')",
                               timeout=30_000)
        assert "needs a fix and has none" in page.locator("#in-export-msg").inner_text()
        # With the annotator's fix, it goes out with that turn, and the message says so.
        page.locator("#in-step input").click()
        page.get_by_role("option").nth(1).click()
        page.locator("#in-verdict").get_by_label("needs fix", exact=True).check()
        fix = ('<think>Look up the harbour view first.</think><tool_call>{"name": "search", "arguments": '
               '{"queries": ["Sydney Opera House from the harbour at dusk"]}}</tool_call>')
        page.fill("#in-fix textarea", fix)
        page.click("#in-save")
        page.wait_for_selector("#in-timeline .ge-fix", timeout=30_000)
        page.click("#in-export")
        page.wait_for_function("() => document.querySelector('#in-export-msg').innerText.includes(\"annotator's fix\")",
                               timeout=30_000)
        page.locator("#in-timeline .ge-ev-step").last.scroll_into_view_if_needed()
        shot(page, "inspector_bench")
        # The fix changed the tool call: the record ends at the fix, and the message says so.
        msg = page.locator("#in-export-msg").inner_text()
        assert "record ends at the fix" in msg and "not re-run" in msg
        # One download: a zip holding the records and the images they point to.
        link = page.locator("#in-export-file a").first
        assert link.inner_text().strip().endswith(".zip") or ".zip" in (link.get_attribute("href") or "")
    import zipfile

    archive = max(home.glob("studio/sessions/*/exports/*/*.zip"), key=lambda p: p.stat().st_mtime)
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        records = [json.loads(line) for line in z.read("sft.jsonl").decode().splitlines()]
    (record,) = [r for r in records if "Opera House" in json.dumps(r)]
    assert next(m["content"] for m in record["messages"] if m["role"] == "assistant") == fix
    assert record["messages"][-1]["content"] == fix and all(p in names for p in record["images"])


def test_bench_summary_reads_and_a_case_runs_from_the_bench(light_studio):
    url, home = light_studio
    run_dir = _bench_into(home)
    with browser() as b:
        page = b.new_page(viewport={"width": 1440, "height": 1000})
        open_studio(page, url)
        page.get_by_role("tab", name="Bench").click()
        page.wait_for_selector("#be-table [data-testid='cell-0-0']", timeout=30_000)
        rundir = page.locator("#be-rundir input")
        rundir.fill(str(run_dir))
        rundir.press("Enter")
        page.click("#be-open")
        page.wait_for_selector("#be-summary-msg strong", timeout=60_000)
        # A table a person reads: a dozen columns at most, every header on at most two lines.
        heads = page.locator("#be-summary th")
        page.wait_for_function("() => document.querySelectorAll('#be-summary th').length > 3", timeout=30_000)
        assert heads.count() <= 12, heads.all_inner_texts()
        heights = page.evaluate("() => [...document.querySelectorAll('#be-summary th')].map(th => "
                                "[th.innerText, th.getBoundingClientRect().height, "
                                "parseFloat(getComputedStyle(th).lineHeight) || 20])")
        assert all(h <= 2.6 * lh + 16 for _, h, lh in heights), heights
        assert "structure" in " ".join(heads.all_inner_texts())
        # The full report is a link that downloads, not a path on the server.
        links = page.locator("#be-summary-files a")
        page.wait_for_selector("#be-summary-files a", timeout=30_000)
        names = "".join(page.locator("#be-summary-files").inner_text().split())
        assert "report.html" in names and "summary.csv" in names and links.count() == 2
        assert all((a.get_attribute("href") or "").startswith(("http", "/")) for a in links.all())
        assert str(run_dir) not in page.locator("#be-summary-msg").inner_text()
        # The Dimensions chart carries structure (what the offline judge measures).
        page.wait_for_selector("#be-dims .js-plotly-plot", timeout=30_000)
        assert "structure" in page.evaluate("() => document.querySelector('#be-dims').textContent")
        # "Run this case in Generate" runs it: no second press on Generate.
        page.locator("#be-table [data-testid='cell-0-0']").click()
        page.wait_for_selector("#be-case h3", timeout=30_000)
        page.click("#be-run")
        page.wait_for_selector("#ge-events .ge-ev-round_start", timeout=60_000)
        page.wait_for_selector("#ge-verify .ge-report", timeout=150_000)
        shot(page, "bench_case_ran")
