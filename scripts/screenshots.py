"""Re-shoot docs/images/studio_*.png from the real studio (`python app.py`) in Chromium.

    python scripts/screenshots.py [--out docs/images] [--skip-training]

Starts the studio on a free 127.0.0.1 port with a private GENEVOLVE_HOME (nothing of yours is
shown or touched), does in each tab what a user would — a Generate run with a reference image,
a bench run, a judged run, an audited trajectory, a Decision Guide, a short CPU training job —
and saves one full-page screenshot per tab. Needs Debian's chromium (/usr/bin/chromium) and
Playwright; runs offline. The training shot waits for the first loss points (a few minutes on
two CPU cores); --skip-training leaves that image as it is.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the same launcher the browser tests use
sys.path.insert(0, str(REPO))

from helpers.studio_server import add_sample_guide, browser, running_studio  # noqa: E402

VIEWPORT = {"width": 1440, "height": 1000}
REQUEST = 'A retro travel poster of my cat next to a rocket, title "MOON CAT" in bold serif'


def _save(page, out: Path, name: str) -> None:
    path = out / f"studio_{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"  wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _cat(folder: Path) -> Path:
    from PIL import Image
    from skimage import data

    path = folder / "my_cat.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


def _bench(home: Path, cfg: Path) -> None:
    """A two-case bench run where the studio finds it (Bench and Inspector tabs)."""
    env = dict(os.environ, GENEVOLVE_HOME=str(home), GENEVOLVE_OFFLINE="1", HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-m", "genevolve.cli", "bench", "run", "--bench", "mini", "--out",
                    str(home / "bench" / "mini-2"), "--limit", "2", "--offline", "--no-progress", "--config", str(cfg)],
                   cwd=REPO, env=env, check=True, capture_output=True)


def shoot(out: Path, skip_training: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="genevolve-shots-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        cfg = home / "studio.yaml"
        cfg.write_text("extra:\n  library_embeddings: false\n")
        _bench(home, cfg)
        add_sample_guide(home)
        with running_studio(home, env={"GENEVOLVE_STUDIO_CONFIG": str(cfg)}, timeout_s=600) as url, browser() as b:
            page = b.new_page(viewport=VIEWPORT)
            page.goto(url)
            page.wait_for_selector("#ge-session code", timeout=60_000)

            if not skip_training:  # started first: it boots while the other tabs are shot
                _tab(page, "Training")
                page.wait_for_selector("#tr-start", timeout=30_000)
                page.fill("#tr-max-steps input", "40")
                page.click("#tr-start")
                page.wait_for_function("() => document.querySelector('#tr-msg').innerText.includes('Started job')",
                                       timeout=30_000)

            print("Generate")
            _tab(page, "Generate")
            page.fill("#ge-request textarea", REQUEST)
            page.set_input_files("#ge-uploads input[type=file]", [str(_cat(Path(tmp)))])
            page.wait_for_function("() => document.querySelector('#ge-uploads').innerText.includes('my_cat')",
                                   timeout=30_000)
            page.click("#ge-go")
            page.wait_for_selector("#ge-verify .ge-report", timeout=180_000)
            page.wait_for_function("() => document.querySelector('#ge-downloads').innerText.includes('image')",
                                   timeout=30_000)
            page.mouse.move(0, 0)
            _save(page, out, "generate")

            print("Judge")
            _tab(page, "Judge")
            page.locator("#ju-pick input").click()
            page.get_by_role("option").first.click()
            page.wait_for_function("() => document.querySelector('#ju-question textarea').value.includes('MOON CAT')",
                                   timeout=30_000)
            page.click("#ju-go")
            page.wait_for_selector("#ju-card .ge-scorecard", timeout=90_000)
            _save(page, out, "judge")

            print("Inspector")
            _tab(page, "Inspector")
            page.wait_for_function("() => document.querySelector('#in-table').innerText.includes('bench')",
                                   timeout=60_000)
            page.locator("#in-table [data-testid='cell-0-0']").click()  # the newest: our Generate run
            page.wait_for_selector("#in-timeline .ge-rendered", timeout=30_000)
            page.click("#in-save")
            page.wait_for_selector("#in-audits .ge-v-accept", timeout=30_000)
            page.click("#in-export")
            page.wait_for_function("() => document.querySelector('#in-export-msg').innerText.includes('Exported')",
                                   timeout=30_000)
            _save(page, out, "inspector")

            print("Bench")
            _tab(page, "Bench")
            page.wait_for_selector("#be-table [data-testid='cell-0-0']", timeout=30_000)
            page.locator("#be-search input, #be-search textarea").press_sequentially("first image", delay=30)
            page.wait_for_function("() => !document.querySelector('#be-count').innerText.startsWith('38 of')",
                                   timeout=30_000)
            page.locator("#be-table [data-testid='cell-0-0']").click()
            page.wait_for_selector("#be-case h3", timeout=30_000)
            rundir = page.locator("#be-rundir input")
            rundir.fill(str(home / "bench" / "mini-2"))
            rundir.press("Enter")
            page.click("#be-open")
            page.wait_for_selector("#be-chart .js-plotly-plot", timeout=60_000)
            _save(page, out, "bench")

            print("Decision Guides")
            _tab(page, "Decision Guides")
            page.wait_for_selector("#gu-list .ge-guide", timeout=30_000)
            page.fill("#gu-query textarea", 'A poster with the exact headline "SUMMER SALE"')
            page.click("#gu-ask")
            page.wait_for_selector("#gu-answer .ge-guide .ge-chip", timeout=120_000)
            _save(page, out, "guides")

            if not skip_training:
                print("Training (waits for the first loss points)")
                _tab(page, "Training")
                page.wait_for_selector("#tr-loss .js-plotly-plot", timeout=420_000)
                time.sleep(5)  # a few more points on the curve
                _save(page, out, "training")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "images"), help="folder for studio_*.png")
    parser.add_argument("--skip-training", action="store_true", help="keep the existing training screenshot")
    args = parser.parse_args()
    shoot(Path(args.out), skip_training=args.skip_training)


if __name__ == "__main__":
    main()
