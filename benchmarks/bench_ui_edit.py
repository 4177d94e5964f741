"""An Edit round trip in the web UI (upload -> result shown, in headless Chromium) against the same
``edit`` call made directly, on the bundled shapes-64 model; also the screenshots of the README.

    python benchmarks/bench_ui_edit.py                       # 3 repeats, prints the ratio (bar: <= 1.5)
    python benchmarks/bench_ui_edit.py --screenshots docs/img

The direct call is timed with the model already loaded, as the server has it. Each repeat runs
both, with a fresh seed each (so no cache helps either). Never fails on time.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from retouch.edit.api import edit
from retouch.models.loading import load_model
from retouch.ui import ServeOptions, UISession, serve
from retouch.worlds.shapes64 import Scene

SOURCE = "a large red circle on a blue background"
TARGET = "a large red circle on a green background"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def browser_round_trip(page, picture: Path, seed: int) -> float:
    """Seconds from the upload to the result shown, with the captions already typed."""
    page.reload()
    page.get_by_text("Options", exact=True).click()
    page.wait_for_selector("#edit-seed textarea", state="visible")
    page.fill("#edit-source textarea", SOURCE)
    page.fill("#edit-target textarea", TARGET)
    page.fill("#edit-seed textarea", str(seed))
    start = time.perf_counter()
    page.set_input_files("#edit-picture input[type=file]", str(picture))
    page.wait_for_selector("#edit-preview img")
    page.click("#edit-run")
    page.get_by_text("Region:").wait_for()
    page.wait_for_selector("#edit-result img")
    return time.perf_counter() - start


def steer_screenshot(page, path: Path) -> None:
    page.get_by_role("tab", name="Steer").click()
    page.fill("#steer-prompt-a textarea", "a large red circle on a blue background")
    page.fill("#steer-prompt-b textarea", "a large red circle on a green background")
    page.click("#steer-run")
    page.wait_for_selector("#steer-strip img", timeout=300_000)
    page.screenshot(path=str(path), full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--screenshots", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    model = load_model("shapes-64", device="cpu")
    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    picture = work / "input.png"
    Image.fromarray(Scene("blue", "red", "circle", "large", 14, 10).render()).save(picture)
    port = free_port()
    app = serve(UISession(model, outputs=work / "outputs"), ServeOptions(port=port), block=False)
    direct, ui = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1500})
        page.set_default_timeout(300_000)
        page.goto(f"http://127.0.0.1:{port}")
        for repeat in range(args.repeats):
            start = time.perf_counter()
            edit(model, picture, SOURCE, TARGET, seed=100 + repeat)
            direct.append(time.perf_counter() - start)
            ui.append(browser_round_trip(page, picture, 200 + repeat))
            print(f"repeat {repeat}: edit() {direct[-1]:.2f} s, browser round trip {ui[-1]:.2f} s")
        if args.screenshots:
            args.screenshots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.screenshots / "ui_edit.png"), full_page=True)
            steer_screenshot(page, args.screenshots / "ui_steer.png")
        browser.close()
    app.close()
    ratio = statistics.median(ui) / statistics.median(direct)
    print(f"median: edit() {statistics.median(direct):.2f} s, UI {statistics.median(ui):.2f} s, ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
