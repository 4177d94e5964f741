"""``retouch train instruct --data generated``: the paper's data route (caption pairs from a
grammar, picture pairs drawn with prompt-to-prompt, a CLIP filter), on the tiny random model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from retouch.cli import main
from retouch.errors import RetouchError
from retouch.metrics.clip_score import ClipScorer
from retouch.models.loading import LoadedModel, load_model
from retouch.steer.pairs import (
    GeneratedSettings,
    GeneratedTriplets,
    changed_region,
    draw_pairs,
)
from retouch.worlds import shapes64_instructions as grammar

SOURCE, TARGET = "a small red square on a blue background", "a small green square on a blue background"


class _Captions:
    """Two caption pairs in turn, at the tiny model's 32 px."""

    resolution = 32

    def sample_captions(self, rng: np.random.Generator) -> tuple[str, str, str]:
        if rng.random() < 0.5:
            return SOURCE, "make the square green", TARGET
        return TARGET, "make the background red", "a small green square on a red background"

    def vocabulary(self) -> list[str]:
        return [*grammar.INSTRUCTION_WORDS, "square", "red", "green", "blue"]


@pytest.fixture(scope="module")
def clip() -> ClipScorer:
    return ClipScorer.load(None)  # the bundled shapes-64 CLIP


def _plain(model, prompt: str, seed: int) -> np.ndarray:
    """The picture the pipeline draws alone from ``seed``'s latents, as ``draw_pairs`` seeds them."""
    pipe = model.pipe
    side = pipe.unet.config.sample_size  # latent cells: the model's own size
    shape = (pipe.unet.config.in_channels, side, side)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed))[None]
    images = pipe(prompt, latents=latents, num_inference_steps=2, guidance_scale=model.guidance_scale(),
                  output_type="np").images
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)[0]


def test_pairs_share_the_source_maps_only_while_told(tiny_model):
    settings = GeneratedSettings(steps=2)
    before, after = draw_pairs(tiny_model, [SOURCE, TARGET], [TARGET, SOURCE], [3, 4], share=0.0, settings=settings)
    assert before.shape == after.shape == (2, 32, 32, 3) and before.dtype == np.uint8
    # unshared, each picture is its caption's own drawing from its seed (up to batch rounding)
    for pictures, prompts in ((before, [SOURCE, TARGET]), (after, [TARGET, SOURCE])):
        for picture, prompt, seed in zip(pictures, prompts, [3, 4], strict=True):
            assert np.abs(picture.astype(int) - _plain(tiny_model, prompt, seed)).max() <= 1
    shared_before, shared_after = draw_pairs(tiny_model, [SOURCE], [TARGET], [3], share=1.0, settings=settings)
    assert np.abs(shared_before[0].astype(int) - before[0]).max() <= 1  # the source half is untouched
    assert np.abs(shared_after[0].astype(int) - after[0]).max() > 1  # the target took the source's maps


def test_changed_region_is_the_difference_grown():
    before = np.zeros((1, 16, 16, 3), dtype=np.uint8)
    after = before.copy()
    after[0, 8, 8] = (0, 200, 0)
    after[0, 2, 2] = (10, 10, 10)  # below the threshold
    region = changed_region(before, after, threshold=24, grow=2)
    assert region.dtype == np.float32 and region.sum() == 25 and region[0, 6:11, 6:11].all()


def test_filter_keeps_what_passes_and_counts_what_was_drawn(tiny_model, clip):
    keep_all = GeneratedSettings(steps=2, batch=3, min_directional=-2, min_image_similarity=-2)
    source = GeneratedTriplets(_Captions(), base=tiny_model, clip=clip, settings=keep_all)
    inputs, texts, edited, regions = source.sample_triplets(np.random.default_rng(0), 4)
    assert inputs.shape == edited.shape == (4, 32, 32, 3) and regions.shape == (4, 32, 32) and len(texts) == 4
    assert set(texts) <= {"make the square green", "make the background red"}
    assert source.stats.drawn == 6 and source.stats.kept == 6 and len(source.stats.directional) == 6
    again = GeneratedTriplets(_Captions(), base=tiny_model, clip=clip, settings=keep_all)
    repeat = again.sample_triplets(np.random.default_rng(0), 4)
    assert np.array_equal(repeat[0], inputs) and repeat[1] == texts  # seeded by the rng alone

    keep_none = GeneratedSettings(steps=2, batch=1, min_directional=2.0)
    strict = GeneratedTriplets(_Captions(), base=tiny_model, clip=clip, settings=keep_none)
    with pytest.raises(RetouchError, match="kept 0 of 50"):
        strict.sample_triplets(np.random.default_rng(0), 1)


def test_cli_trains_on_generated_triplets_from_its_base(tiny_model_dir, clip, tmp_path, monkeypatch, capsys):
    import retouch.train.data

    seen: list[LoadedModel] = []

    def generated(base: LoadedModel) -> GeneratedTriplets:
        seen.append(base)
        settings = GeneratedSettings(steps=2, batch=4, min_directional=-2, min_image_similarity=-2)
        return GeneratedTriplets(_Captions(), base=base, clip=clip, settings=settings)

    monkeypatch.setattr(retouch.train.data, "registered_sources", lambda: {"generated": generated})
    out = tmp_path / "run"
    argv = ["train", "instruct", "--base", str(tiny_model_dir), "--output", str(out), "--data", "generated",
            "--steps", "2", "--batch-size", "2", "--num-triplets", "4", "--quiet"]
    assert main(argv) == 0
    # the pictures are drawn by the model being fine-tuned, the one the trainer loaded (not a second load)
    assert len(seen) == 1 and isinstance(seen[0], LoadedModel) and seen[0].name == str(tiny_model_dir)
    assert "triplets drawn 4, kept 4 (100.0%)" in capsys.readouterr().out
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["data"] == "generated"
    assert load_model(str(out), device="cpu").pipe.unet.config.in_channels == 8


def test_the_world_registers_the_generated_source():
    from retouch.train.data import registered_sources

    factory = registered_sources()["generated"]
    assert factory is grammar.generated_source
    source = factory(base="shapes-64")
    assert isinstance(source, GeneratedTriplets) and source.resolution == 64
    source_caption, instruction, target_caption = source.grammar.sample_captions(np.random.default_rng(1))
    assert grammar.instruction_captions(instruction, source_caption) == (source_caption, target_caption)
    assert set(source.vocabulary()) >= set(grammar.INSTRUCTION_WORDS)

