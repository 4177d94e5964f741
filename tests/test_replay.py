"""replay: a PNG's recipe re-creates the image bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import STEPS

from retouch.batch import replay
from retouch.core.generate import generate
from retouch.errors import RetouchError
from retouch.io.images import load_image
from retouch.io.png import save_png


@pytest.mark.parametrize("scheduler", ["euler-a", "dpm++"])
def test_replay_is_bit_for_bit(tiny_model, tmp_path, scheduler):
    result = generate(
        tiny_model, "a small yellow triangle", seed=9, num_images=2, steps=STEPS, scheduler=scheduler
    )
    source = save_png(result.images[1], tmp_path / "source.png", result.recipes[1])
    replayed = replay(source, tmp_path / "again.png", tiny_model)
    assert replayed.identical
    assert np.array_equal(np.asarray(load_image(source)), np.asarray(load_image(tmp_path / "again.png")))
    assert replayed.recipe == result.recipes[1]


def test_replay_loads_the_recipes_model(tiny_model, tmp_path):
    result = generate(tiny_model, "a red circle", seed=1, steps=1)
    source = save_png(result.images[0], tmp_path / "a.png", result.recipes[0])
    replayed = replay(source)  # loads the model named in the recipe
    assert replayed.identical and replayed.path == tmp_path / "a.replay.png"


def test_replay_of_a_missing_file(tmp_path):
    with pytest.raises(RetouchError, match="image not found"):
        replay(tmp_path / "nope.png")
