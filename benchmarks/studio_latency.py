"""Studio latency in a real browser: how soon the first streamed event shows, and whether the page
stays responsive while a run streams.

    python benchmarks/studio_latency.py [--runs 5] [--out docs/bench/studio.md]

Starts `python app.py` on a free port with a fresh GENEVOLVE_HOME and drives Debian's chromium.

1. First event (planner policy, offline): time from the click on Generate to the first event card
   in the DOM, measured inside the page (performance.now + MutationObserver). Baseline in the same
   run: when the run's final result appears — what a page that waits for the whole run would show first.
2. Responsiveness while streaming: a run against a local OpenAI-compatible endpoint that streams
   planner turns slowly (so it lasts a while). Meanwhile we (a) measure main-thread stalls with a
   16 ms timer loop and (b) switch to the Inspector and click Refresh, timing until its table has
   rows. Baseline: the same two measures with no run going.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers.studio_server import browser, running_studio, slow_openai_server  # noqa: E402

REQUESTS = [
    'A retro travel poster of a cat next to a rocket, title "MOON CAT" in bold serif',
    'A bakery shop sign with the word "FRESH"',
    'A concert poster of a horse under the moon, headline "NORTH STAR"',
    'A minimalist poster of a coffee cup, title "SLOW MORNING"',
    'A book cover with an astronaut on the moon, title "FAR SIDE"',
    'A postcard of a motorcycle on a coastal road, words "RIDE WEST"',
]

OBSERVE = """() => {
  // Cards of the previous run are marked, so only this run's cards count.
  document.querySelectorAll('#ge-events .ge-ev').forEach(e => e.dataset.old = '1');
  window.__b = {t0: performance.now(), first: null, done: null};
  const obs = new MutationObserver(() => {
    const t = performance.now() - window.__b.t0;
    if (window.__b.first === null && document.querySelector('#ge-events .ge-ev:not([data-old])')) window.__b.first = t;
    if (window.__b.done === null && document.querySelector('#ge-events .ge-ev-done:not([data-old])')) window.__b.done = t;
  });
  obs.observe(document.body, {childList: true, subtree: true});
}"""

STALLS = """(ms) => new Promise(resolve => {
  const gaps = []; let last = performance.now(); const end = last + ms;
  const tick = () => { const now = performance.now(); gaps.push(now - last); last = now;
    if (now < end) setTimeout(tick, 16); else resolve(gaps); };
  setTimeout(tick, 16);
})"""


def first_event(page, request: str) -> tuple[float, float]:
    page.fill("#ge-request textarea", request)
    page.evaluate(OBSERVE)
    page.click("#ge-go")
    page.wait_for_function("() => window.__b.done !== null", timeout=180_000)
    page.wait_for_function("() => !!document.querySelector('#ge-status') && "
                           "/(answer|cancelled|error|failed)/.test(document.querySelector('#ge-status').innerText)",
                           timeout=180_000)
    b = page.evaluate("() => window.__b")
    return b["first"], b["done"]


def inspector_refresh(page) -> float:
    page.get_by_role("tab", name="Inspector").click()
    page.wait_for_selector("#in-refresh")
    t0 = time.perf_counter()
    page.evaluate("() => { const t = document.querySelector('#in-table'); if (t) t.dataset.bench = 'old'; }")
    page.click("#in-refresh")
    page.wait_for_selector("#in-table [data-testid='cell-0-0']", timeout=60_000)
    dt = time.perf_counter() - t0
    page.get_by_role("tab", name="Generate").click()
    return dt


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="studio_bench_"))
    lines = []
    with running_studio(home) as url, slow_openai_server(delay_s=0.15) as slow_url, browser() as b:
        page = b.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#ge-session code", timeout=60_000)
        firsts, dones = [], []
        for i in range(args.runs + 1):
            f, d = first_event(page, REQUESTS[i % len(REQUESTS)])
            label = "cold (first run of a fresh studio)" if i == 0 else f"warm run {i}"
            print(f"{label}: first event {f:.0f} ms, run finished {d:.0f} ms", flush=True)
            if i == 0:
                cold = (f, d)
            else:
                firsts.append(f)
                dones.append(d)

        # Responsiveness, idle baseline.
        idle_gaps = page.evaluate(STALLS, 4000)
        idle_refresh = [inspector_refresh(page) for _ in range(3)]
        # Responsiveness while a slow streamed run is going.
        page.locator("#ge-backends").click()
        policy = page.locator("#ge-policy input")
        policy.fill(f"openai:slow@{slow_url}")
        policy.press("Enter")
        page.fill("#ge-request textarea", 'A poster of two horses on a beach with the words "SEA RUN"')
        page.evaluate(OBSERVE)
        page.click("#ge-go")
        page.wait_for_selector("#ge-events .ge-live", timeout=60_000)
        busy_gaps = page.evaluate(STALLS, 4000)
        busy_refresh = [inspector_refresh(page) for _ in range(3)]
        still_running = page.evaluate("() => window.__b.done === null")
        page.click("#ge-stop")
        page.wait_for_function("() => window.__b.done !== null", timeout=60_000)

    med_first, med_done = statistics.median(firsts), statistics.median(dones)
    lines += [
        "# Studio latency",
        "",
        f"Command: `python benchmarks/studio_latency.py --runs {args.runs}` (Debian chromium, headless; "
        "`python app.py` on 127.0.0.1; planner policy, layout renderer, offline; 2-core shared CPU).",
        "",
        f"Load average when it ran: {os.getloadavg()[0]:.1f} (other work shares the 2 cores; numbers are noisy).",
        "",
        "## First streamed event after Generate (planner policy)",
        "",
        "| | first event shown | agent run finished (no-streaming baseline) | ratio |",
        "|---|---|---|---|",
        f"| cold (first run of a fresh studio) | {cold[0]:.0f} ms | {cold[1]:.0f} ms | {cold[0] / cold[1]:.3f} |",
        f"| warm, median of {len(firsts)} | {med_first:.0f} ms | {med_done:.0f} ms | {med_first / med_done:.3f} |",
        f"| warm, worst | {max(firsts):.0f} ms | {max(dones):.0f} ms | |",
        "",
        "Target: first event within 1 s of submit. The baseline column is when the final result",
        "(termination card) appears: what a page that waits for the whole run would show first.",
        "",
        "## Responsiveness while a run streams",
        "",
        "A run against a local OpenAI-compatible endpoint streaming planner turns (12 chars / 150 ms),",
        "so thinking text is pushed to the page continuously. Measured in the same page:",
        "",
        "| | idle (baseline) | while streaming | ratio |",
        "|---|---|---|---|",
        f"| main-thread timer gap p50 (16 ms timer) | {percentile(idle_gaps, .5):.1f} ms | "
        f"{percentile(busy_gaps, .5):.1f} ms | {percentile(busy_gaps, .5) / percentile(idle_gaps, .5):.2f} |",
        f"| main-thread timer gap p99 | {percentile(idle_gaps, .99):.1f} ms | {percentile(busy_gaps, .99):.1f} ms | "
        f"{percentile(busy_gaps, .99) / percentile(idle_gaps, .99):.2f} |",
        f"| max stall | {max(idle_gaps):.0f} ms | {max(busy_gaps):.0f} ms | |",
        f"| Inspector refresh round-trip, median of 3 | {statistics.median(idle_refresh) * 1000:.0f} ms | "
        f"{statistics.median(busy_refresh) * 1000:.0f} ms | "
        f"{statistics.median(busy_refresh) / statistics.median(idle_refresh):.2f} |",
        "",
        f"The streamed run was still going when the measurements ended: {still_running}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
