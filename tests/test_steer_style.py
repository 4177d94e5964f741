"""Style amount: theta = 0 is the plain generation bit for bit; the phrase must be there."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from retouch.core.generate import generate
from retouch.errors import RetouchError
from retouch.io.png import read_recipe
from retouch.models.tiny import tiny_pipeline
from retouch.steer.style import (
    parse_sweep,
    remove_phrase,
    style_direction,
    style_embeddings,
    style_sweep,
    stylize,
)
from retouch.steer.style_auto import styled_caption, stylize_auto

PROMPT = "a large red circle on a blue background, pastel"
FAST = {"seed": 7, "steps": 2}


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[0])


@pytest.mark.parametrize(
    ("prompt", "phrase", "expected"),
    [
        (PROMPT, "pastel", "a large red circle on a blue background"),
        ("pastel, a red circle", "pastel", "a red circle"),
        ("a red, Pastel, circle", "pastel", "a red, circle"),
        ("a red  circle   in oil painting style", "oil painting", "a red circle in style"),
        ("a pastel", "a pastel", ""),
    ],
)
def test_remove_phrase(prompt: str, phrase: str, expected: str) -> None:
    assert remove_phrase(prompt, phrase) == expected


def test_phrase_not_in_prompt_is_an_error_naming_it(pipe) -> None:
    with pytest.raises(RetouchError, match="'watercolor' is not in the prompt"):
        remove_phrase(PROMPT, "watercolor")
    with pytest.raises(RetouchError, match="'past' is not in the prompt"):
        remove_phrase(PROMPT, "past")  # whole words only
    with pytest.raises(RetouchError, match="watercolor"):
        stylize(pipe, PROMPT, "watercolor", 0.5, **FAST)
    with pytest.raises(RetouchError, match="empty"):
        style_direction(pipe, PROMPT, " ", "phrase")
    with pytest.raises(RetouchError, match="unknown style direction"):
        stylize(pipe, PROMPT, "pastel", 0.5, "sideways", **FAST)  # type: ignore[arg-type]


def test_zero_amount_is_the_plain_encoding(pipe) -> None:
    plain, _ = pipe.encode_prompt(PROMPT, pipe.device, 1, False)
    for direction in ("prompt", "phrase"):
        assert torch.equal(style_embeddings(pipe, PROMPT, "pastel", 0.0, direction), plain)
    v = style_direction(pipe, PROMPT, "pastel", "prompt")
    torch.testing.assert_close(style_embeddings(pipe, PROMPT, "pastel", 1.0), plain + v)


@pytest.mark.parametrize("scheduler", ["euler-a", "ddim"])
def test_zero_amount_is_plain_generate_bit_for_bit(pipe, scheduler: str) -> None:
    plain = _pixels(generate(pipe, PROMPT, scheduler=scheduler, **FAST))
    zero = stylize(pipe, PROMPT, "pastel", 0.0, scheduler=scheduler, **FAST)
    assert np.array_equal(_pixels(zero), plain)
    assert zero.recipes[0]["task"] == "style"
    assert zero.recipes[0]["amount"] == 0.0 and "strength" not in zero.recipes[0]
    zero_phrase = stylize(pipe, "a red circle", "pastel", 0.0, "phrase", scheduler=scheduler, **FAST)
    plain_phrase = generate(pipe, "a red circle", scheduler=scheduler, **FAST)
    assert np.array_equal(_pixels(zero_phrase), _pixels(plain_phrase))
    stronger = stylize(pipe, PROMPT, "pastel", 0.75, scheduler=scheduler, **FAST)
    assert not np.array_equal(_pixels(stronger), plain)


def test_amount_outside_the_range_warns(pipe, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="retouch"):
        style_embeddings(pipe, PROMPT, "pastel", 1.5)
        assert not caplog.records
        style_embeddings(pipe, PROMPT, "pastel", 2.5)
    assert "style amount 2.5 is outside [-1, 2]" in caplog.text


def test_long_prompt_warns_naming_the_cut_words(pipe, caplog: pytest.LogCaptureFixture) -> None:
    long_prompt = " ".join(["red"] * 75 + ["green", "star", "pastel"])
    with caplog.at_level(logging.WARNING, logger="retouch"):
        stylize(pipe, long_prompt, "red", 0.2, seed=1, steps=1)
    assert "cut off: 'green star pastel'" in caplog.text


def test_parse_sweep() -> None:
    assert parse_sweep("-0.5:1:7") == [-0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_sweep("0.3:0.3:1") == [0.3]
    for bad in ("0:1", "a:1:3", "0:1:0"):
        with pytest.raises(RetouchError):
            parse_sweep(bad)


def test_sweep_grid_and_frames(pipe) -> None:
    sweep = style_sweep(pipe, PROMPT, "pastel", "0:0.5:3", seed=7, steps=2)
    assert sweep.amounts == [0.0, 0.25, 0.5] and sweep.strengths == sweep.amounts  # the old name
    width, height = sweep.images[0].size
    assert sweep.grid.size == (3 * width + 2 * 2, height)
    assert "amount" not in sweep.grid_recipe and sweep.grid_recipe["sweep"] == "0:0.5:3"
    assert [r["amount"] for r in sweep.recipes] == [0.0, 0.25, 0.5]
    assert np.array_equal(np.asarray(sweep.images[0]), _pixels(generate(pipe, PROMPT, **FAST)))


def test_strength_is_still_accepted_as_the_amount(pipe) -> None:
    new = stylize(pipe, PROMPT, "pastel", amount=0.5, **FAST)
    old = stylize(pipe, PROMPT, "pastel", strength=0.5, **FAST)
    assert np.array_equal(_pixels(new), _pixels(old)) and old.recipes == new.recipes
    by_old_name = style_embeddings(pipe, PROMPT, "pastel", strength=0.5)
    assert torch.equal(by_old_name, style_embeddings(pipe, PROMPT, "pastel", 0.5))
    with pytest.raises(RetouchError, match="disagree"):
        stylize(pipe, PROMPT, "pastel", amount=0.5, strength=0.2, **FAST)


def test_sweep_saves_numbered_pictures_and_grid_with_recipes(pipe, tmp_path) -> None:
    sweep = style_sweep(pipe, PROMPT, "pastel", "0:0.5:3", seed=7, steps=2)
    (tmp_path / "00004-1.png").write_bytes(b"")  # an earlier run's number: the next one is 5
    saved = sweep.save(tmp_path)
    assert [p.name for p in saved.files] == [f"00005-7-{k:02d}.png" for k in range(3)]
    assert saved.sheet.name == "00005-7-sweep.png" and saved.animation is None
    assert [read_recipe(p)["amount"] for p in saved.files] == [0.0, 0.25, 0.5]
    assert read_recipe(saved.sheet) == json.loads(json.dumps(sweep.grid_recipe))
    assert np.array_equal(np.asarray(Image.open(saved.files[1]).convert("RGB")), np.asarray(sweep.images[1]))


class AmountJudge:
    """Scores pictures in the order the sweep draws them (amount ascending) from ``scores``, and
    accepts those whose score reaches ``bar``."""

    def __init__(self, scores: list[float], bar: float) -> None:
        self.scores, self.bar, self.calls = scores, bar, 0

    def __call__(self, image: Image.Image) -> tuple[float, bool]:
        self.calls += 1
        score = self.scores[self.calls - 1]
        return score, score >= self.bar


@pytest.mark.parametrize(
    ("scores", "bar", "chosen", "accepted"),
    [
        ([0.1, 0.5, 0.8, 0.6], 0.5, 0.5, True),  # the best accepted, not the first (0.25)
        ([0.1, 0.2, 0.3, 0.25], 0.5, 0.5, False),  # none accepted: the highest score
        ([0.9, 0.1, 0.1, 0.1], 0.5, 0.0, True),  # the plain prompt already shows the style
    ],
)
def test_auto_amount_takes_the_judged_best_and_replays(pipe, scores, bar, chosen, accepted) -> None:
    judge = AmountJudge(scores, bar)
    result = stylize_auto(pipe, PROMPT, "pastel", judge=judge, amounts=(0.0, 0.25, 0.5, 0.75), **FAST)
    report = result.report
    assert judge.calls == 4 and [row["amount"] for row in report["sweep"]] == [0.0, 0.25, 0.5, 0.75]
    assert (report["amount"], report["accepted"]) == (chosen, accepted)
    assert result.recipes[0]["amount"] == chosen and report["judge_caption"] == PROMPT
    again = stylize(pipe, PROMPT, "pastel", chosen, seed=7, steps=2)  # what the recipe replays
    assert np.array_equal(_pixels(result), _pixels(again)) and result.recipes == again.recipes
    assert report["sweep"][0]["psnr_to_plain"] is None  # amount 0 is the plain picture itself


def test_auto_amount_ties_go_to_the_picture_nearest_the_plain(pipe) -> None:
    judge = AmountJudge([0.2, 0.9, 0.9, 0.9], 0.5)
    report = stylize_auto(pipe, PROMPT, "pastel", judge=judge, amounts=(0.0, 0.25, 0.5, 0.75), **FAST).report
    kept = {row["amount"]: row["psnr_to_plain"] for row in report["sweep"][1:]}
    assert report["amount"] == max(kept, key=lambda a: (kept[a], -a))


def test_auto_amount_arguments(pipe) -> None:
    assert styled_caption("a large red circle on a blue background", "pastel") == PROMPT
    assert styled_caption(PROMPT, "Pastel") == PROMPT
    judge = AmountJudge([0.0] * 4, 1.0)
    with pytest.raises(RetouchError, match="one picture"):
        stylize_auto(pipe, PROMPT, "pastel", judge=judge, num_images=2, **FAST)
    with pytest.raises(RetouchError, match="at least one amount"):
        stylize_auto(pipe, PROMPT, "pastel", judge=judge, amounts=(), **FAST)
