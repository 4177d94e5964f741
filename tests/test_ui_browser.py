"""The web UI end to end, in a real headless Chromium (Debian's ``chromium``, driven by Playwright):
the server runs in this process on a free port with the tiny random model."""

from __future__ import annotations

import io
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

from retouch.ui import ServeOptions, UISession, serve

CHROMIUM = Path("/usr/bin/chromium")
SOURCE = "a large red circle on a blue background"
TARGET = "a large red circle on a green background"
SQUARE = np.ones((3, 3), bool)  # a dilation by k covers every pixel within k px, diagonals too
WAIT_MS = 60_000  # a run on the tiny model takes seconds; a busy CI machine may take longer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, UISession]]:
    outputs = tmp_path_factory.mktemp("ui") / "outputs"
    session = UISession(tiny_model, outputs=outputs)
    port = free_port()
    app = serve(session, ServeOptions(port=port), block=False)
    try:
        yield f"http://127.0.0.1:{port}", session
    finally:
        app.close()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        message = (
            "the web UI's browser tests need Debian's Chromium at /usr/bin/chromium: "
            "run `apt-get install -y chromium` (.ci/run does it when missing)"
        )
        if os.environ.get("RETOUCH_REQUIRE_BROWSER") == "1":  # CI: a missing browser is a failure
            pytest.fail(message)
        pytest.skip(f"SKIPPED: no Chromium; {message}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    url, _ = server
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    yield page
    context.close()


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 x 32 red disc on blue."""
    yy, xx = np.mgrid[:32, :32]
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:] = (30, 60, 220)
    pixels[(yy - 16) ** 2 + (xx - 15) ** 2 < 64] = (220, 30, 30)
    path = tmp_path_factory.mktemp("pictures") / "disc.png"
    Image.fromarray(pixels).save(path)
    return path


def set_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def download(page, link) -> bytes:
    response = page.request.get(link.get_attribute("href"))
    assert response.ok
    return response.body()


def test_edit_round_trip_keeps_the_pixels_outside_the_mask(page, picture: Path, tmp_path: Path) -> None:
    page.get_by_text("Options", exact=True).click()
    page.wait_for_selector("#edit-seed textarea", state="visible")
    page.set_input_files("#edit-picture input[type=file]", str(picture))
    page.wait_for_selector("#edit-preview img")  # the upload is in
    page.fill("#edit-source textarea", SOURCE)
    page.fill("#edit-target textarea", TARGET)
    page.fill("#edit-seed textarea", "1")
    set_number(page, "edit-steps", 2)
    page.wait_for_timeout(300)  # let the boxes' last input events reach the app's state
    page.click("#edit-run")
    page.wait_for_selector("#edit-result img")
    page.get_by_text("Region:").wait_for()
    assert "confidence" in page.inner_text("#edit-region")
    links = page.locator("#edit-files a")
    names = [links.nth(i).get_attribute("href").rsplit("/", 1)[-1] for i in range(links.count())]
    assert names == ["00000-1.png", "00000-1.mask.png", "00000-1.layer.png", "00000-1.json"]
    edited = np.asarray(Image.open(io.BytesIO(download(page, links.nth(0)))).convert("RGB"))
    mask = np.asarray(Image.open(io.BytesIO(download(page, links.nth(1))))) > 0
    source = np.asarray(Image.open(picture).convert("RGB"))
    outside = ~binary_dilation(mask, SQUARE, iterations=3)  # beyond the 2-px feather band
    assert outside.any() and mask.any()
    assert np.array_equal(edited[outside], source[outside])
    assert not np.array_equal(edited[mask], source[mask])
    page.screenshot(path=str(tmp_path / "edit.png"), full_page=True)


def test_a_painted_mask_overrides_the_automatic_one(page, picture: Path) -> None:
    page.set_input_files("#edit-picture input[type=file]", str(picture))
    page.wait_for_selector("#edit-preview img")
    page.get_by_text("Paint a mask (optional)", exact=True).click()  # the editor loads the picture
    canvas = page.locator("#edit-editor canvas").first
    canvas.wait_for(state="visible")
    page.wait_for_timeout(2500)  # the picture reaches the canvas (software WebGL: slow on a busy CPU)
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 20, y)  # one stroke across the middle of the picture
    page.mouse.down()
    page.mouse.move(x + 20, y, steps=10)
    page.mouse.up()
    page.wait_for_timeout(500)
    page.fill("#edit-source textarea", SOURCE)
    page.fill("#edit-target textarea", TARGET)
    page.get_by_text("Options", exact=True).click()
    page.wait_for_selector("#edit-seed textarea", state="visible")
    page.fill("#edit-seed textarea", "2")
    set_number(page, "edit-steps", 2)
    page.wait_for_timeout(300)
    page.click("#edit-run")
    page.get_by_text("Region:").wait_for()
    assert "Region: mask" in page.inner_text("#edit-region")
    links = page.locator("#edit-files a")
    edited = np.asarray(Image.open(io.BytesIO(download(page, links.nth(0)))).convert("RGB"))
    mask = np.asarray(Image.open(io.BytesIO(download(page, links.nth(1))))) > 0
    assert 0 < mask.mean() < 0.5  # the stroke (a brush sized to the picture), not the whole picture
    outside = ~binary_dilation(mask, SQUARE, iterations=3)  # beyond the 2-px feather band
    assert np.array_equal(edited[outside], np.asarray(Image.open(picture).convert("RGB"))[outside])


def test_a_concept_trained_in_the_browser_appears_in_edit(page, picture: Path) -> None:
    page.get_by_role("tab", name="Concepts").click()
    page.set_input_files("#concept-files input[type=file]", [str(picture)] * 3)
    page.wait_for_timeout(500)
    set_number(page, "concept-steps", 2)
    page.wait_for_timeout(300)
    page.click("#concept-train")
    page.get_by_text("Trained").wait_for()
    assert "star-textual-inversion" in page.inner_text("#concept-status")
    page.get_by_role("tab", name="Edit").click()
    page.get_by_text("Options", exact=True).click()
    page.get_by_label("Concepts (then use their tokens in captions)").click()
    page.get_by_role("option", name="star-textual-inversion").wait_for()


def test_generate_and_send_to_edit(page) -> None:
    page.get_by_role("tab", name="Generate").click()
    page.fill("#generate-prompt textarea", "a small green square on a white background")
    page.fill("#generate-seed textarea", "7")
    set_number(page, "generate-steps", 2)
    page.click("#generate-run")
    page.wait_for_selector("#generate-gallery img")
    page.click("#generate-send")
    source = page.locator("#edit-source textarea")
    source.wait_for(state="visible")
    assert source.input_value() == "a small green square on a white background"
    page.locator("#edit-picture").get_by_text("00000-7").wait_for()  # the saved PNG, with its recipe
    page.wait_for_selector("#edit-preview img")


def test_png_info_reads_the_seed_back(page, server) -> None:
    _, session = server
    made = sorted((session.outputs / "generate").glob("*.png")) if (session.outputs / "generate").exists() else []
    if not made:  # run alone: make one through the API the Generate tab calls
        from retouch.ui import handlers

        made = [handlers.run_generate(session, "a small green square", seed="7", steps=2)[0][0]]
    page.get_by_role("tab", name="PNG info").click()
    page.set_input_files("#info-png input[type=file]", str(made[-1]))
    parameters = page.locator("#info-parameters textarea")
    page.wait_for_function("() => document.querySelector('#info-parameters textarea').value.includes('Seed: 7')")
    assert "Seed: 7" in parameters.input_value()
    assert str(session.outputs) not in page.inner_text("#info-recipe")


def test_a_non_image_shows_the_message_and_the_server_keeps_serving(page, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    page.set_input_files("#edit-picture input[type=file]", str(notes))
    message = page.get_by_text("cannot read image notes.txt")
    message.wait_for()
    assert "/tmp" not in message.inner_text() and "Traceback" not in page.content()
    page.reload()
    page.wait_for_selector("#edit-run")
    assert page.request.get(page.url).ok


def test_files_outside_the_outputs_folder_are_refused(page, server, tmp_path: Path) -> None:
    url, session = server
    secret = session.outputs.parent / "secret.txt"
    secret.write_text("do not serve")
    for path in ("/etc/passwd", str(secret), f"{session.outputs}/../secret.txt", str(Path(__file__))):
        response = page.request.get(f"{url}/gradio_api/file={path}")
        assert response.status in (403, 404), path
        assert b"do not serve" not in response.body() and b"root:" not in response.body()
