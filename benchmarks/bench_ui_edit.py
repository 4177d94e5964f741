"""An Edit round trip in the web UI (upload -> result shown, in headless Chromium) against the same
edit made directly, on the bundled shapes-64 model; also the screenshots of the README.

    python benchmarks/bench_ui_edit.py                       # 5 repeats, prints the ratios (bar: <= 1.5)
    python benchmarks/bench_ui_edit.py --screenshots docs/img

Two references, both on the same picture, captions and seed as the browser's run:
- ``edit()`` in this process with the model already loaded, as the server has it (the strict one:
  only what the UI adds is measured);
- the ``retouch edit`` command, as a user runs it (a new process: imports, model load, edit).
The server runs the model with the threads `retouch serve` uses (``server_threads``: one core
left to the event loop and the browser), the references with torch's default, as `retouch edit`.
Each repeat uses a fresh seed (the UI and both references share it, so each does the same work,
with ``--tries auto`` included) and the browser runs on the same two cores as the server. Never
fails on time.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from retouch.edit.api import edit
from retouch.models.loading import load_model
from retouch.ui import ServeOptions, UISession, serve
from retouch.ui.server import server_threads
from retouch.worlds.shapes64 import Scene

SOURCE = "a large red circle on a blue background"
TARGET = "a large red circle on a green background"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli_edit(picture: Path, seed: int, output: Path) -> float:
    """Seconds for ``retouch edit`` as a user types it (a new process)."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "retouch", "edit", str(picture), "--source", SOURCE, "--target", TARGET]
    subprocess.run([*command, "--seed", str(seed), "--output", str(output)], check=True, capture_output=True)
    return time.perf_counter() - start


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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--screenshots", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    model = load_model("shapes-64", device="cpu")
    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    picture = work / "input.png"
    Image.fromarray(Scene("blue", "red", "circle", "large", 14, 10).render()).save(picture)
    port = free_port()
    app = serve(UISession(model, outputs=work / "outputs"), ServeOptions(port=port), block=False)
    direct, ui, cli = [], [], []
    default_threads = torch.get_num_threads()  # as `retouch edit` runs the model
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1500})
        page.set_default_timeout(300_000)
        page.goto(f"http://127.0.0.1:{port}")
        for repeat in range(args.repeats):
            seed = 100 + repeat
            start = time.perf_counter()
            edit(model, picture, SOURCE, TARGET, seed=seed)
            direct.append(time.perf_counter() - start)
            torch.set_num_threads(server_threads())  # as `retouch serve` runs the model
            ui.append(browser_round_trip(page, picture, seed))
            torch.set_num_threads(default_threads)
            cli.append(cli_edit(picture, seed, work / f"cli-{seed}.png"))
            print(f"repeat {repeat}: edit() {direct[-1]:.2f} s, browser {ui[-1]:.2f} s, retouch edit {cli[-1]:.2f} s")
        if args.screenshots:
            args.screenshots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.screenshots / "ui_edit.png"), full_page=True)
            steer_screenshot(page, args.screenshots / "ui_steer.png")
        browser.close()
    app.close()
    ui_s, direct_s, cli_s = (statistics.median(times) for times in (ui, direct, cli))
    print(f"median: edit() {direct_s:.2f} s, browser round trip {ui_s:.2f} s, retouch edit {cli_s:.2f} s")
    print(f"ratio browser / edit() (model loaded) {ui_s / direct_s:.2f}; browser / retouch edit {ui_s / cli_s:.2f}")


if __name__ == "__main__":
    main()
