"""Prompt interpolation: the ends are the plain generations of A and B with the same seed."""

from __future__ import annotations

import numpy as np
import pytest

from retouch.core.generate import generate
from retouch.errors import RetouchError
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
