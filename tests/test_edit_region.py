"""The one region pipeline (``edit.region_pipeline``) on the tiny random model: the typed result
of ``find_edit_region``, pinned to the numbers it gave once, ``sample_in_region``'s composite,
and the editor with no picture world installed."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import retouch.core.world
from retouch.core.latents import encode, text_embeddings
from retouch.edit import MaskConfig
from retouch.edit.layer import feather_alpha
from retouch.edit.region import caption_region, is_recolor
from retouch.edit.region_pipeline import EditRegion, decide_region, find_edit_region, sample_in_region
from retouch.errors import RetouchError

SOURCE = "a small red square on a blue background"
TARGET = "a small green square on a blue background"
FAST = MaskConfig(num_draws=2)
EDIT_ROOT = Path(__file__).resolve().parents[1] / "src" / "retouch" / "edit"


@pytest.fixture(scope="module")
def pipe():
    from retouch.models.tiny import tiny_pipeline

    return tiny_pipeline()


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:] = (40, 90, 220)
    pixels[8:20, 10:22] = (220, 40, 40)
    return pixels


@pytest.fixture(scope="module")
def inputs(pipe, picture):
    latents = encode(pipe, picture)  # (1, 4, 16, 16)
    source_embeds, _ = text_embeddings(pipe, SOURCE, 1.0)
    target_embeds, negative_embeds = text_embeddings(pipe, TARGET, 7.5)
    return latents, source_embeds, target_embeds, negative_embeds


def find(pipe, picture, inputs, **options) -> EditRegion:
    latents, source_embeds, target_embeds, _ = inputs
    return find_edit_region(
        pipe, latents, picture, source_embeds, target_embeds, source=SOURCE, target=TARGET, seed=0, config=FAST,
        **options,
    )


@pytest.mark.parametrize(
    ("region", "expected", "pixels", "cells", "evidence"),
    [
        ("auto", "foreground", 548, 137, {"captions", "image"}),
        ("foreground", "foreground", 548, 137, {"given", "image"}),
        ("background", "background", 880, 220, {"given", "image"}),
    ],
)
def test_find_edit_region_gives_a_typed_result(pipe, picture, inputs, region, expected, pixels, cells, evidence):
    found = find(pipe, picture, inputs, region=region)
    assert isinstance(found, EditRegion)
    assert (found.region, found.confidence, found.recolor) == (expected, 1.0, True)  # canonical: exact
    assert set(found.evidence) == evidence
    assert found.pixel_mask.shape == (32, 32) and found.pixel_mask.dtype == bool
    assert found.latent_mask.shape == found.keep_object_mask.shape == (16, 16)
    assert (int(found.pixel_mask.sum()), int(found.latent_mask.sum())) == (pixels, cells)  # as measured once
    assert (found.keep_object_mask <= found.latent_mask).all()
    assert found.decision.region == expected and found.early_mask is found.keep_object_mask
    if region == "auto":
        assert found.evidence["captions"]["rule"] == "shapes-64 fields"


def test_an_empty_cut_is_refused_or_kept_as_asked(pipe, picture, inputs):
    latents, source_embeds, _, _ = inputs
    same = {"source": SOURCE, "target": TARGET, "seed": 0, "region": "foreground", "config": FAST}
    with pytest.raises(RetouchError, match="the automatic mask is empty: nothing differs"):
        find_edit_region(pipe, latents, picture, source_embeds, source_embeds, if_empty="nothing differs", **same)
    found = find_edit_region(pipe, latents, picture, source_embeds, source_embeds, if_empty=None, **same)
    assert not found.latent_mask.any() and not found.pixel_mask.any()


def test_decide_region_without_a_source_caption_reads_the_map():
    blob = np.zeros((16, 16))
    blob[6:10, 6:10] = 1.0
    decision = decide_region(blob, None, TARGET)
    assert decision.region == "foreground" and decision.confidence == 1.0
    assert decision.evidence["rule"] == "the map's mass on the border (no source caption)"
    assert decide_region(1.0 - blob, None, TARGET).region == "background"


def test_sample_in_region_composites_onto_the_input_at_its_size(pipe, picture, inputs):
    latents, _, target_embeds, negative_embeds = inputs
    found = find(pipe, picture, inputs)
    background = picture[:30, :31]  # the input before padding
    out = sample_in_region(
        pipe, latents, found, target_embeds, negative_embeds, picture=picture, background=background,
        scheduler="ddim", strength=0.8, steps=2, guidance_scale=7.5, seed=0, config=FAST,
    )
    assert out.output.shape == out.edited.shape == (30, 31, 3) and out.mask.shape == (30, 31)
    kept = feather_alpha(out.mask) == 0
    assert np.array_equal(out.output[kept], background[kept]) and kept.sum() > 500
    assert np.array_equal(out.output[out.mask], out.edited[out.mask])  # inside: the edit itself
    assert (out.mask <= found.pixel_mask[:30, :31]).all()  # refined inside the found region, never grown
    # a recolour: the old object's pixels (alpha > 0) in the one colour the model drew there
    assert (int(out.mask.sum()), out.output[out.mask][:2].tolist()) == (144, [[82, 131, 100], [82, 131, 100]])
    again = sample_in_region(
        pipe, latents, found, target_embeds, negative_embeds, picture=picture, background=background,
        scheduler="ddim", strength=0.8, steps=2, guidance_scale=7.5, seed=0, config=FAST,
    )
    assert np.array_equal(again.output, out.output)  # seeded: the same pixels


def test_the_editor_reads_captions_without_any_world(monkeypatch):
    monkeypatch.setattr(retouch.core.world, "installed_worlds", lambda: [])
    guess = caption_region(SOURCE, "a small red square on a green background")
    assert guess.region == "background" and not guess.exact and guess.evidence["rule"] == "caption words"
    assert is_recolor(SOURCE, TARGET)  # colour words alone, read from the words
    assert caption_region("a photo of a dog", "a photo of a dog, pastel").region == "global"


def test_region_and_masks_import_no_world():
    for name in ("region.py", "masks.py", "region_pipeline.py"):
        tree = ast.parse((EDIT_ROOT / name).read_text())
        imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        assert not [m for m in imported if m.startswith("retouch.worlds")], name


def test_mask_config_keeps_the_old_name_of_keep_object_fraction():
    config = MaskConfig(keep_object_fraction=0.25)
    assert config.hold_fraction == config.keep_object_fraction == 0.25
