"""Prompt interpolation: the ends are the plain generations of A and B with the same seed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from retouch.core.generate import generate
from retouch.errors import RetouchError
from retouch.io.png import read_recipe
from retouch.models.tiny import tiny_pipeline
from retouch.steer.interpolate import frame_positions, interpolate

A, B = "a small red circle on a blue background", "a small red circle on a green background"


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def _np(image) -> np.ndarray:
    return np.asarray(image)


@pytest.mark.parametrize("scheduler", ["euler-a", "ddim"])
def test_endpoints_are_the_plain_generations(pipe, scheduler: str) -> None:
    kwargs = {"seed": 11, "steps": 2, "scheduler": scheduler}
    result = interpolate(pipe, A, B, frames=3, **kwargs)
    assert result.ts == [0.0, 0.5, 1.0]
    assert np.array_equal(_np(result.images[0]), _np(generate(pipe, A, **kwargs).images[0]))
    assert np.array_equal(_np(result.images[-1]), _np(generate(pipe, B, **kwargs).images[0]))
    assert not np.array_equal(_np(result.images[1]), _np(result.images[0]))
    assert [r["frame"] for r in result.recipes] == [0, 1, 2]
    width, height = result.images[0].size
    assert result.strip is not None and result.strip.size == (3 * width + 2 * 2, height)
    assert "frame" not in result.strip_recipe and result.strip_recipe["task"] == "interpolate"


def test_one_frame_alone_matches_the_full_run(pipe) -> None:
    kwargs = {"seed": 5, "steps": 2, "negative_prompt": "[pink]"}
    full = interpolate(pipe, A, B, frames=4, **kwargs)
    alone = interpolate(pipe, A, B, frames=4, frame=2, **kwargs)
    assert alone.strip is None and len(alone.images) == 1
    assert np.array_equal(_np(alone.images[0]), _np(full.images[2]))
    assert alone.recipes[0] == full.recipes[2]


def test_noise_seed_b_slerps_the_initial_noise(pipe) -> None:
    kwargs = {"steps": 2, "scheduler": "ddim"}  # no per-step noise: the last frame is B's seed's
    result = interpolate(pipe, A, B, frames=3, seed=1, noise_seed_b=2, **kwargs)
    assert np.array_equal(_np(result.images[0]), _np(generate(pipe, A, seed=1, **kwargs).images[0]))
    assert np.array_equal(_np(result.images[-1]), _np(generate(pipe, B, seed=2, **kwargs).images[0]))
    assert result.recipes[0]["noise_seed_b"] == 2


def test_bad_input(pipe) -> None:
    with pytest.raises(RetouchError, match="at least 2 frames"):
        interpolate(pipe, A, B, frames=1, seed=1, steps=1)
    with pytest.raises(RetouchError, match="frame must be between 0 and 2"):
        interpolate(pipe, A, B, frames=3, frame=3, seed=1, steps=1)
    with pytest.raises(RetouchError, match="at least 2 frames"):
        frame_positions(0)


def test_layout_steps_share_the_midpoint_then_follow_each_frame(pipe) -> None:
    kwargs = {"seed": 7, "steps": 3, "scheduler": "ddim"}
    plain = interpolate(pipe, A, B, frames=3, **kwargs)
    locked = interpolate(pipe, A, B, frames=3, layout_steps=2, **kwargs)
    # the midpoint frame is conditioned on the midpoint all along either way
    assert np.array_equal(_np(locked.images[1]), _np(plain.images[1]))
    # the ends took their first two steps on the midpoint, then their own text
    assert not np.array_equal(_np(locked.images[0]), _np(plain.images[0]))
    assert not np.array_equal(_np(locked.images[0]), _np(locked.images[1]))
    assert not np.array_equal(_np(locked.images[0]), _np(locked.images[2]))
    assert locked.recipes[0]["layout_steps"] == 2
    alone = interpolate(pipe, A, B, frames=3, frame=0, layout_steps=2, **kwargs)
    assert np.array_equal(_np(alone.images[0]), _np(locked.images[0]))
    with pytest.raises(RetouchError, match="layout_steps must be at least 0 and below steps"):
        interpolate(pipe, A, B, frames=3, layout_steps=3, **kwargs)


def test_hold_common_keeps_frame_zero_and_replays(pipe) -> None:
    kwargs = {"seed": 3, "steps": 4, "scheduler": "euler"}
    held = interpolate(pipe, A, B, frames=3, hold_common=1.0, **kwargs)
    # frame 0's own sampling is the held trajectory: it is the plain generation of A
    assert np.array_equal(_np(held.images[0]), _np(generate(pipe, A, **kwargs).images[0]))
    assert held.recipes[2]["hold_common"] == 1.0
    alone = interpolate(pipe, A, B, frames=3, frame=2, hold_common=1.0, **kwargs)
    assert np.array_equal(_np(alone.images[0]), _np(held.images[2]))
    with pytest.raises(RetouchError, match="whole picture"):  # a style word: nothing is shared
        interpolate(pipe, A, A + ", pastel", frames=3, hold_common=0.5, **kwargs)
    with pytest.raises(RetouchError, match="hold_common is a fraction"):
        interpolate(pipe, A, B, frames=3, hold_common=1.5, **kwargs)
    with pytest.raises(RetouchError, match="choose one"):
        interpolate(pipe, A, B, frames=3, hold_common=1.0, layout_steps=2, **kwargs)


def test_hold_common_keeps_frame_zero_pixels_outside_the_changing_region(pipe, monkeypatch) -> None:
    import retouch.steer.interpolate as module
    kwargs = {"seed": 3, "steps": 4, "scheduler": "euler", "frames": 3, "hold_common": 1.0}
    width, height = interpolate(pipe, A, B, **kwargs).images[0].size
    pixels = np.zeros((height, width), dtype=bool)
    pixels[:, width // 2 :] = True  # the right half follows each frame, the left is frame 0's
    monkeypatch.setattr(module, "changing_region", lambda *args: pixels)
    free = interpolate(pipe, A, B, **kwargs)
    first, last = _np(free.images[0]), _np(free.images[2])
    assert np.array_equal(last[:, : width // 2 - 3], first[:, : width // 2 - 3])  # beyond the 2-px feather
    assert not np.array_equal(last[:, width // 2 :], first[:, width // 2 :])


def test_keep_pixels_gives_the_rim_and_a_feather_to_the_frame() -> None:
    from retouch.steer.hold import keep_pixels

    first, frame = np.zeros((8, 32, 3), dtype=np.uint8), np.full((8, 32, 3), 255, dtype=np.uint8)
    changing = np.zeros((8, 32), dtype=bool)
    changing[:, 16:] = True  # the frame's own half
    out = keep_pixels(first, frame, changing, feather=2, rim=1)[0, :, 0]
    assert (out[15:] == 255).all()  # the frame's half and the kept part's 1-px rim
    assert 0 < out[13] < out[14] < 255  # the feather
    assert (out[:13] == 0).all()  # frame 0's pixels, bit for bit
    whole = np.ones((8, 32), dtype=bool)  # nothing kept
    assert (keep_pixels(first, frame, whole) == 255).all()




def test_save_writes_numbered_frames_strip_and_gif(pipe, tmp_path) -> None:
    result = interpolate(pipe, A, B, frames=3, seed=6, steps=2)
    saved = result.save(tmp_path, frame_ms=120)
    assert [p.name for p in saved.files] == ["00000-6-00.png", "00000-6-01.png", "00000-6-02.png"]
    assert (saved.sheet.name, saved.animation.name) == ("00000-6-strip.png", "00000-6.gif")
    assert [read_recipe(p)["frame"] for p in saved.files] == [0, 1, 2]
    assert "frame" not in read_recipe(saved.sheet)
    with Image.open(saved.animation) as gif:
        assert (gif.n_frames, gif.info["duration"]) == (3, 120)
    again = interpolate(pipe, A, B, frames=3, frame=2, seed=6, steps=2).save(tmp_path)
    assert [p.name for p in again.files] == ["00001-6-02.png"] and again.sheet is None and again.animation is None
    assert np.array_equal(np.asarray(Image.open(again.files[0])), np.asarray(Image.open(saved.files[2])))
