"""The web UI's handlers, without a browser: they call the API as the CLI does and return what
the components show; bad input comes back as the CLI's message, with no server path in it."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from retouch.errors import RetouchError
from retouch.io.png import read_recipe
from retouch.ui import ServeOptions, UISession, edit_handlers, handlers, launch_options
from retouch.ui.calls import shown_errors
from retouch.ui.session import RunCancelled, public, public_text

STEPS = 2
SOURCE = "a large red circle on a blue background"
TARGET = "a large red circle on a green background"


@pytest.fixture
def session(tiny_model, tmp_path: Path) -> UISession:
    return UISession(tiny_model, outputs=tmp_path / "outputs")


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    """A 32 x 32 red disc on blue, as the tiny model's size."""
    yy, xx = np.mgrid[:32, :32]
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:] = (30, 60, 220)
    pixels[(yy - 16) ** 2 + (xx - 15) ** 2 < 64] = (220, 30, 30)
    path = tmp_path / "in.png"
    Image.fromarray(pixels).save(path)
    return path


def test_edit_saves_four_files_and_keeps_the_outside(session: UISession, picture: Path) -> None:
    view = edit_handlers.run_edit(session, str(picture), SOURCE, TARGET, steps=STEPS, seed="3")
    assert [p.name for p in view.files] == ["00000-3.png", "00000-3.mask.png", "00000-3.layer.png", "00000-3.json"]
    assert all(p.parent == session.outputs / "edit" and p.exists() for p in view.files)
    edited = np.asarray(Image.open(view.image).convert("RGB"))
    mask = np.asarray(Image.open(view.files[1])) > 0
    source = np.asarray(Image.open(picture).convert("RGB"))
    band = view.report["metrics"]  # the feather band is blended; outside both, the input stays
    assert band["outside"]["identical"] is True
    assert not np.array_equal(edited[mask], source[mask])  # the edit changed the masked region
    assert view.region.startswith(f"Region: **{view.report['region']}**")
    recipe = read_recipe(view.image)
    assert recipe["seed"] == 3 and recipe["source"] == SOURCE
    assert Path(recipe["image"]).parent == (session.outputs / "inputs").resolve()  # replayable: the kept copy
    assert view.overlay.size == (32, 32) and view.before_after[1].size == (32, 32)


def test_edit_bad_input_is_the_clis_message_without_paths(session: UISession, tmp_path: Path, picture: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(gr.Error) as error:
        shown_errors(edit_handlers.run_edit, session, str(text), SOURCE, TARGET, steps=STEPS)
    assert "cannot read image notes.txt" in error.value.message
    assert str(tmp_path) not in error.value.message
    with pytest.raises(gr.Error, match="name no change"):
        shown_errors(edit_handlers.run_edit, session, str(picture), SOURCE, SOURCE, steps=STEPS)
    with pytest.raises(RetouchError, match="strength"):
        edit_handlers.run_edit(session, str(picture), SOURCE, TARGET, strength="lots")
    with pytest.raises(RetouchError, match="upload a picture"):
        edit_handlers.run_edit(session, None, SOURCE, TARGET)


def test_unexpected_errors_are_logged_not_shown(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise KeyError("/srv/secret/path")

    with caplog.at_level(logging.ERROR, "retouch.ui"), pytest.raises(gr.Error) as error:
        shown_errors(broken)
    assert "KeyError" in error.value.message and "secret" not in error.value.message
    assert "/srv/secret/path" in caplog.text


def test_painted_mask_overrides_the_automatic_one(session: UISession, picture: Path) -> None:
    layer = np.zeros((32, 32, 4), np.uint8)
    assert edit_handlers.painted_mask(session, {"layers": [layer]}) is None  # nothing painted
    layer[4:12, 4:12, 3] = 255
    mask_path = edit_handlers.painted_mask(session, {"layers": [layer]})
    assert np.array_equal(np.asarray(Image.open(mask_path)) > 0, layer[..., 3] > 0)
    editor = {"layers": [layer]}
    view = edit_handlers.run_edit(session, str(picture), SOURCE, TARGET, steps=STEPS, seed="1", editor=editor)
    edited_mask = np.asarray(Image.open(view.files[1])) > 0
    assert view.report["region"] == "mask" and not edited_mask[20:, 20:].any()


def test_generate_then_png_info_reads_the_recipe_back(session: UISession) -> None:
    gallery = handlers.run_generate(session, "a small red circle", seed="12", steps=STEPS, num_images=2)
    assert [caption for _, caption in gallery] == ["seed 12", "seed 13"]
    info = handlers.read_png_info(str(gallery[1][0]))
    assert info.recipe["seed"] == 13 and "Seed: 13" in info.parameters and info.caption == "a small red circle"
    fields = handlers.generate_fields(info.recipe)
    assert fields["seed"] == "13" and fields["steps"] == STEPS
    assert edit_handlers.caption_from_recipe(str(gallery[0][0])) == "a small red circle"
    image, verdict = handlers.run_replay(session, str(gallery[0][0]))
    assert image.parent == session.outputs / "replay" and "identical" in verdict


def test_png_info_reads_automatic1111_parameters(tmp_path: Path) -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    settings = "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 99, Size: 512x512"
    info.add_text("parameters", f"a cat\nNegative prompt: dog\n{settings}")
    path = tmp_path / "a1111.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    shown = handlers.read_png_info(str(path))
    assert shown.recipe["seed"] == 99 and shown.recipe["negative_prompt"] == "dog"
    assert shown.parameters.startswith("a cat")
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(gr.Error, match="plain.png carries no recipe") as error:
        shown_errors(handlers.read_png_info, str(tmp_path / "plain.png"))
    assert str(tmp_path) not in error.value.message


def test_steer_handlers_save_strips(session: UISession) -> None:
    view = handlers.run_interpolate(session, "a red circle", "a green circle", frames=2, seed="5", steps=STEPS)
    assert view.strip.exists() and view.animation.suffix == ".gif" and len(view.frames) == 2
    settings = {"amount": 1, "points": 2, "seed": "5", "steps": STEPS}
    sheet, pictures = handlers.run_style_sweep(session, "a red circle, pastel", "pastel", **settings)
    assert sheet.name.endswith("-sweep.png") and [c for _, c in pictures] == ["amount 0", "amount 1"]
    with pytest.raises(RetouchError, match="style phrase"):
        handlers.run_style_sweep(session, "a red circle", " ")


def test_imagic_handler_shows_the_chosen_picture(session: UISession, picture: Path, tmp_path: Path) -> None:
    session.imagic_cache = tmp_path / "cache"
    settings = {"eta": "0.5", "seed": "2", "steps": STEPS, "embed_steps": 2, "tune_steps": 0}
    view = handlers.run_imagic(session, str(picture), TARGET, **settings)
    assert view.image.exists() and view.image.parent == session.outputs / "imagic"
    assert len(view.sweep) == 1 and view.sweep[0][1].startswith("eta 0.5, seed 2")
    with pytest.raises(RetouchError, match="eta"):
        handlers.run_imagic(session, str(picture), TARGET, eta="high")


def test_seed_and_strength_boxes() -> None:
    assert edit_handlers.seed_value("") is None and edit_handlers.seed_value("-1") is None
    assert edit_handlers.seed_value(" 9007199254740993 ") == 9007199254740993  # past a float's digits
    with pytest.raises(RetouchError, match="whole number"):
        edit_handlers.seed_value("1.5")
    assert edit_handlers.strength_value("auto") == "auto" and edit_handlers.strength_value("0.5") == 0.5
    with pytest.raises(RetouchError, match=r"\(0, 1\]"):
        edit_handlers.strength_value("1.5")


def test_cancel_stops_the_run_at_its_next_step_and_progress_is_throttled(session: UISession) -> None:
    from types import SimpleNamespace

    from gradio.context import LocalContext

    from retouch.ui.progress import cancellable

    sent: list[int] = []  # what reached the browser: gradio's queue.set_progress(event_id, iterables)
    queue = SimpleNamespace(set_progress=lambda event_id, iterables: sent.append(iterables[-1].index))
    tokens = [
        (LocalContext.progress, LocalContext.progress.set(gr.Progress())),  # the event's own tracker
        (LocalContext.blocks, LocalContext.blocks.set(SimpleNamespace(_queue=queue))),
        (LocalContext.event_id, LocalContext.event_id.set("event-1")),
    ]
    try:
        with session.run("tab-1") as flag, cancellable(flag, every=60.0):
            progress = LocalContext.progress.get()
            progress.tqdm(None, total=20)
            for _ in range(19):
                progress.update()
            assert sent == [0]  # the first update only: the next would be due a minute later
            session.cancel("tab-1")
            with pytest.raises(RunCancelled):
                progress.update()
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
    assert session.lock.acquire(blocking=False)  # the model is free again
    session.lock.release()


def test_runs_on_one_model_never_overlap(session: UISession) -> None:
    inside, overlaps = [], []

    def run(client: str) -> None:
        with session.run(client):
            overlaps.append(len(inside))
            inside.append(client)
            threading.Event().wait(0.05)
            inside.remove(client)

    threads = [threading.Thread(target=run, args=(f"tab-{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [0, 0, 0]


def test_launch_options_are_safe_by_default(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    options = launch_options(ServeOptions(), tmp_path / "out")
    assert options["server_name"] == "127.0.0.1" and options["share"] is False and options["auth"] is None
    assert options["allowed_paths"] == [str((tmp_path / "out").resolve())]
    assert options["max_file_size"] == "10mb" and options["show_error"] is False
    with caplog.at_level(logging.WARNING, "retouch.ui"):
        launch_options(ServeOptions(host="0.0.0.0"), tmp_path / "out")
    assert "no authentication" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "retouch.ui"):
        shared = launch_options(ServeOptions(host="0.0.0.0", auth="anna:a:b"), tmp_path / "out")
    assert shared["auth"] == ("anna", "a:b") and "no authentication" not in caplog.text
    with pytest.raises(RetouchError, match="user:password"):
        launch_options(ServeOptions(auth="anna"), tmp_path / "out")


def test_public_values_hold_no_server_paths() -> None:
    assert public_text("cannot read image /tmp/gradio/ab12/in.png: bad") == "cannot read image in.png: bad"
    assert public({"image": "/srv/x/in.png", "list": ["/a/b/c.json"], "n": 1}) == {
        "image": "in.png",
        "list": ["c.json"],
        "n": 1,
    }
    assert public_text("a/b ratio, 1/2 and http://host/x") == "a/b ratio, 1/2 and http://host/x"


def test_serve_help_names_the_edit_tab(capsys: pytest.CaptureFixture) -> None:
    from retouch.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "127.0.0.1:7860" in out and "Edit tab" in out and "--auth" in out
    assert main(["serve", "--auth", "nopassword"]) == 2
