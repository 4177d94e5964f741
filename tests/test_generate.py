"""generate(): schedulers, seeds, sizes, prompt truncation, and numbers checked once."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import STEPS
from PIL import Image

from retouch.core.generate import generate
from retouch.core.schedulers import SCHEDULER_NAMES, SCHEDULERS, make_scheduler
from retouch.errors import RetouchError


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8)


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_every_scheduler_generates_and_reproduces(tiny_model, scheduler):
    first = generate(tiny_model, "a red circle", seed=3, steps=STEPS, scheduler=scheduler)
    again = generate(tiny_model, "a red circle", seed=3, steps=STEPS, scheduler=scheduler)
    assert first.images[0].size == (32, 32)
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    assert first.recipes[0]["scheduler"] == scheduler


def test_schedulers_are_diffusers_own_classes_from_the_pipeline_config(tiny_model):
    config = tiny_model.pipe.scheduler.config
    for name, spec in SCHEDULERS.items():
        scheduler = make_scheduler(name, config)
        assert type(scheduler) is spec.cls
        assert scheduler.config.beta_schedule == config.beta_schedule


def test_the_pipeline_keeps_its_own_scheduler(tiny_model):
    before = type(tiny_model.pipe.scheduler)
    generate(tiny_model, "a red circle", seed=0, steps=1, scheduler="dpm++")
    assert type(tiny_model.pipe.scheduler) is before


def test_unknown_scheduler_is_a_clear_error(tiny_model):
    with pytest.raises(RetouchError, match="unknown scheduler 'k_lms'.*euler-a"):
        generate(tiny_model, "a red circle", steps=1, scheduler="k_lms")


def test_image_i_uses_seed_plus_i_and_replays_alone(tiny_model):
    many = generate(tiny_model, "a blue square", seed=10, num_images=2, steps=STEPS, scheduler="euler-a")
    assert [r["seed"] for r in many.recipes] == [10, 11]
    assert not np.array_equal(pixels(many.images[0]), pixels(many.images[1]))
    alone = generate(tiny_model, "a blue square", seed=11, steps=STEPS, scheduler="euler-a")
    assert np.array_equal(pixels(many.images[1]), pixels(alone.images[0]))


def test_random_seed_is_recorded(tiny_model):
    result = generate(tiny_model, "a blue square", steps=1)
    seed = result.recipes[0]["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**32


def test_recipe_holds_every_setting(tiny_model, tiny_model_dir):
    result = generate(
        tiny_model,
        "a red circle",
        negative_prompt="blurry",
        seed=5,
        steps=1,
        guidance_scale=3.0,
        scheduler="ddim",
    )
    recipe = result.recipes[0]
    assert recipe["task"] == "generate" and recipe["model"] == str(tiny_model_dir.resolve())
    expected = {"prompt": "a red circle", "negative_prompt": "blurry", "seed": 5, "steps": 1}
    assert expected.items() <= recipe.items()
    assert (recipe["guidance_scale"], recipe["width"], recipe["height"]) == (3.0, 32, 32)
    assert recipe["retouch_version"]


def test_width_and_height(tiny_model):
    result = generate(tiny_model, "a red circle", seed=0, steps=1, width=48, height=16)
    assert result.images[0].size == (48, 16)
    with pytest.raises(RetouchError, match="multiple of 8"):
        generate(tiny_model, "a red circle", steps=1, width=30)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"steps": 0}, "steps"), ({"num_images": 0}, "num_images"), ({"seed": -1}, "seed")],
)
def test_bad_numbers_are_refused(tiny_model, kwargs, message):
    with pytest.raises(RetouchError, match=message):
        generate(tiny_model, "a red circle", **{"steps": 1, **kwargs})


def test_same_pixels_as_the_bare_diffusers_call(tiny_model):
    """retouch adds bookkeeping only: the pixels are diffusers' own."""
    from diffusers import DDIMScheduler

    pipe = tiny_model.pipe
    ours = generate(tiny_model, "a red circle", seed=7, steps=STEPS, scheduler="ddim").images[0]
    original = pipe.scheduler
    pipe.scheduler = DDIMScheduler.from_config(original.config)
    try:
        theirs = pipe(
            "a red circle", num_inference_steps=STEPS, generator=torch.Generator().manual_seed(7)
        ).images[0]
    finally:
        pipe.scheduler = original
    assert np.array_equal(pixels(ours), pixels(theirs))


def test_pixels_match_numbers_checked_once(tiny_model):
    """Catches regressions in the generate path (diffusers' tests do the same)."""
    image = generate(tiny_model, "a large red circle", seed=0, steps=STEPS, scheduler="ddim").images[0]
    corner = pixels(image)[-3:, -3:, -1].astype(np.float32).flatten() / 255
    expected = np.array(EXPECTED_CORNER, dtype=np.float32)
    assert np.abs(corner - expected).max() < 3 / 255, corner.round(4).tolist()


# Bottom-right 3 x 3 of the blue channel, checked once (torch 2.13.0 CPU, diffusers 0.42.1).
EXPECTED_CORNER = [0.3686, 0.4039, 0.4235, 0.5765, 0.4118, 0.4392, 0.6392, 0.5961, 0.4667]


def test_long_prompt_warns_with_the_cut_words(tiny_model, caplog):
    words = " ".join(["red"] * 80)  # 80 one-token words: more than the 75 CLIP keeps
    with caplog.at_level(logging.WARNING, logger="retouch"):
        generate(tiny_model, words + " purple triangle", seed=0, steps=1)
    message = caplog.text
    assert "cut off" in message and "purple triangle" in message


def test_short_prompt_does_not_warn(tiny_model, caplog):
    with caplog.at_level(logging.WARNING, logger="retouch"):
        generate(tiny_model, "a red circle", seed=0, steps=1)
    assert "cut off" not in caplog.text


def test_saved_pictures_are_numbered_on_and_carry_their_recipes(tiny_model, tmp_path):
    from retouch.io.outputs import next_index, save_numbered
    from retouch.io.png import read_recipe

    result = generate(tiny_model, "a blue square", seed=10, num_images=2, steps=STEPS)
    (tmp_path / "00007-3.png").write_bytes(b"")  # an earlier run
    (tmp_path / "notes-99999.png").write_bytes(b"")  # not numbered: ignored
    assert next_index(tmp_path) == 8
    files = save_numbered(tmp_path, result.images, result.recipes)
    assert [p.name for p in files] == ["00008-10.png", "00009-11.png"]
    assert [read_recipe(p) for p in files] == result.recipes
    assert np.array_equal(pixels(Image.open(files[1]).convert("RGB")), pixels(result.images[1]))
