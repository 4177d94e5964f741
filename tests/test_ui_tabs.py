"""The Instruct and Concepts tabs' handlers, without a browser: instruct with Preserve keeps the
outside bit for bit; a concept trained from uploads is offered to the other tabs and used there,
with the served model itself never changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

from retouch.errors import RetouchError
from retouch.io.png import read_recipe
from retouch.train.finetune import weights_sha256
from retouch.ui import UISession, edit_handlers, handlers
from retouch.ui.concept_handlers import loss_rows, train_from_uploads
from retouch.ui.instruct_handlers import run_instruct

SQUARE = np.ones((3, 3), bool)


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:] = (40, 90, 220)
    pixels[8:20, 10:22] = (220, 40, 40)
    path = tmp_path / "in.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def instruct_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from retouch.models.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-instruct", seed=1, in_channels=8)


def test_instruct_with_preserve_keeps_the_outside(tiny_model, instruct_dir: Path, picture: Path, tmp_path) -> None:
    session = UISession(tiny_model, outputs=tmp_path / "outputs", instruct_model=str(instruct_dir))
    view = run_instruct(session, str(picture), "make the background green", steps=2, seed="4", preserve=True)
    assert [p.name for p in view.files] == ["00000-4.png", "00000-4.mask.png", "00000-4.layer.png", "00000-4.json"]
    assert all(p.parent == session.outputs / "instruct" for p in view.files)
    edited = np.asarray(Image.open(view.image).convert("RGB"))
    mask = np.asarray(Image.open(view.files[1])) > 0
    outside = ~binary_dilation(mask, SQUARE, iterations=3)
    assert np.array_equal(edited[outside], np.asarray(Image.open(picture).convert("RGB"))[outside])
    assert view.summary.startswith("Region: ") and read_recipe(view.image)["instruction"] == "make the background green"
    assert session.instruct() is session.instruct()  # loaded once
    with pytest.raises(RetouchError, match="not an instruct model.*4 input channels"):
        run_instruct(
            UISession(tiny_model, outputs=tmp_path / "o2", instruct_model=session.model.name),
            str(picture),
            "make it green",
            steps=2,
        )


def test_a_concept_trained_from_uploads_is_used_in_the_other_tabs(tiny_model, picture: Path, tmp_path) -> None:
    session = UISession(tiny_model, outputs=tmp_path / "outputs")
    before = weights_sha256(tiny_model.pipe)
    with pytest.raises(RetouchError, match="3 to 20 pictures"):
        train_from_uploads(session, "tab", [str(picture)] * 2, "<star>", steps=2)
    name = train_from_uploads(session, "tab", [str(picture)] * 3, "<star>", init_word="circle", steps=2)
    assert name == "star-textual-inversion" and (session.concepts[name] / "concept.json").is_file()
    assert [step for step, _ in loss_rows(session, "tab")] == [1, 2]  # the live curve's rows
    assert weights_sha256(tiny_model.pipe) == before  # a copy learned it; the served model is unchanged
    gallery = handlers.run_generate(
        session, "a large red <star> on a blue background", steps=2, seed="5", concepts=[name]
    )
    adapters = read_recipe(gallery[0][0])["adapters"]
    assert [a["kind"] for a in adapters] == ["embedding"] and adapters[0]["concept"] == str(session.concepts[name])
    view = edit_handlers.run_edit(
        session,
        str(picture),
        "a large red square on a blue background",
        "a large red <star> on a blue background",
        steps=2,
        seed="6",
        concepts=[name],
    )
    assert read_recipe(view.image)["adapters"][0]["sha256"] == adapters[0]["sha256"]
    assert "<star>" not in tiny_model.pipe.tokenizer.get_vocab()  # taken off again after the run
    with pytest.raises(RetouchError, match="unknown concept"):
        handlers.run_generate(session, "a star", steps=2, concepts=["nope"])
    assert train_from_uploads(session, "tab", [str(picture)] * 3, "<star>", steps=1) == "star-textual-inversion-2"
