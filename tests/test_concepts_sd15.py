"""Personalization at full scale: on Stable Diffusion 1.5's architecture with random weights (UNet
~860M parameters, CLIP ViT-L/14 text encoder, SD VAE) at 256x256, every method trains 2 steps and
saves, and plain diffusers (a subprocess that never imports retouch) draws from the saved files the
same pixels as retouch's in-memory model."""

from __future__ import annotations

import gc
import json
import os

import numpy as np
import pytest
import torch
from concept_cases import CASES, draw_plain, write_pictures

from retouch.core.generate import generate
from retouch.models.loading import load_model
from retouch.models.random_sd15 import sd15_pipeline
from retouch.train.concept import ConceptSettings
from retouch.train.personalize import personalize

PROMPT = "a <star> on a red background"
SIDE = 256  # pixels: 32x32 latents
DRAW = {"steps": 1, "guidance_scale": 1.0}  # one DDIM step, one UNet call: what the files change shows at once


def draw(model) -> np.ndarray:
    return np.asarray(generate(model, PROMPT, seed=0, scheduler="ddim", **DRAW).images[0])


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    """Full-size networks: both cores (the suite runs one test at a time; the plain-diffusers
    subprocess takes the same thread count, so the same float sums)."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sd15_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd15") / "model"
    sd15_pipeline(sample_size=SIDE // 8).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def trained(sd15_dir, tmp_path_factory):
    """Every case trained 2 steps (batch 1, no class images): name -> (folder, retouch's picture).
    One model in memory at a time (DreamBooth with Adam holds about 15 GB)."""
    tmp = tmp_path_factory.mktemp("sd15-concepts")
    pictures = write_pictures(tmp / "pictures", 3, side=SIDE)
    settings = ConceptSettings(steps=2, lr=1e-3, batch_size=1, checkpoint_every=0)
    out = {}
    for name, (method, options) in CASES.items():
        model = load_model(str(sd15_dir), device="cpu")
        result = personalize(model, method, [pictures], ["<star>"], tmp / name, class_words=["cross"],
                             settings=settings, **options)
        out[name] = (result.folder, draw(result.model))
        del model, result
        gc.collect()
    return out


def test_every_method_trains_on_sd15_and_its_files_load_in_plain_diffusers(sd15_dir, trained, tmp_path):
    jobs = [{"name": name, "base": str(sd15_dir), "concept": str(folder), "prompt": PROMPT, **DRAW}
            for name, (folder, _) in trained.items()]
    plain = draw_plain(jobs, tmp_path)
    base = draw(load_model(str(sd15_dir), device="cpu"))
    for name, (folder, in_memory) in trained.items():
        manifest = json.loads((folder / "concept.json").read_text())
        assert manifest["method"] == CASES[name][0] and manifest["settings"]["steps"] == 2, name
        assert in_memory.shape == (SIDE, SIDE, 3), name
        np.testing.assert_array_equal(plain[name], in_memory, err_msg=name)
        if f"{name}-kohya" in plain:  # the kohya copy (A1111, ComfyUI) draws the same
            np.testing.assert_array_equal(plain[f"{name}-kohya"], in_memory, err_msg=f"{name}-kohya")
        assert not np.array_equal(base, in_memory), f"{name}: the concept does not change the picture"
