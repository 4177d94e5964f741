"""Imagic on a tiny random model: stages A and B, LoRA and full tuning, the cache, eta, auto eta."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image

from retouch.core.latents import encode, text_embeddings
from retouch.edit import masks
from retouch.edit.imagic import ETA_GRID, imagic
from retouch.edit.imagic_region import find_region
from retouch.edit.imagic_sample import interpolate_embeddings
from retouch.edit.imagic_stages import ImagicConfig, imagic_config, imagic_unet, optimize_embedding, tune_unet
from retouch.edit.layer import feather_alpha
from retouch.errors import RetouchError
from retouch.train.finetune import diffusion_loss, lora_parameters, reconstruction_loss, training_scheduler

TARGET = "a large red circle on a blue background"
FAST = {"embed_steps": 3, "tune_steps": 3, "batch_size": 1, "steps": 2}  # every code path, little time


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """(32, 32, 3) uint8: a red disc on blue, the tiny model's size."""
    y, x = np.mgrid[:32, :32]
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[...] = (40, 90, 220)
    image[(x - 16) ** 2 + (y - 16) ** 2 < 100] = (220, 40, 40)
    return image


@pytest.fixture(scope="module")
def stage_inputs(tiny_model, picture):
    pipe = tiny_model.pipe
    latents = encode(pipe, picture)  # (1, 4, 16, 16)
    target_embeds, _ = text_embeddings(pipe, TARGET, 1.0)  # (1, 77, 32)
    return pipe, training_scheduler(pipe), latents, target_embeds.float()


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_stage_a_lowers_the_reconstruction_loss(stage_inputs):
    pipe, noise_scheduler, latents, target_embeds = stage_inputs
    before_weights = _state(pipe.unet)
    config = ImagicConfig(embed_steps=12, lr_embed=5e-2, batch_size=2)
    optimized, losses = optimize_embedding(pipe.unet, noise_scheduler, latents, target_embeds, config)
    before = reconstruction_loss(pipe.unet, noise_scheduler, latents, target_embeds, seed=2)
    after = reconstruction_loss(pipe.unet, noise_scheduler, latents, optimized, seed=2)
    assert optimized.shape == target_embeds.shape == (1, 77, 32)
    assert len(losses) == 12
    assert after < before, (before, after)
    assert before == pytest.approx(1.1571, abs=0.05)  # checked once: the random model's loss
    # the UNet was frozen and is left as it was (weights, gradients, mode, checkpointing)
    assert all(torch.equal(v, before_weights[k]) for k, v in pipe.unet.state_dict().items())
    assert all(p.grad is None for p in pipe.unet.parameters())
    assert not pipe.unet.training and not pipe.unet.is_gradient_checkpointing


def test_v_prediction_models_learn_the_velocity(stage_inputs):
    """The bundled model predicts v (with zero terminal SNR): the loss's target follows the scheduler."""
    pipe, _, latents, target_embeds = stage_inputs
    noise_scheduler = DDPMScheduler.from_config(
        pipe.scheduler.config, prediction_type="v_prediction", rescale_betas_zero_snr=True
    )
    generator = torch.Generator().manual_seed(0)
    x0 = latents.expand(2, -1, -1, -1)
    with torch.no_grad():
        loss = diffusion_loss(pipe.unet, noise_scheduler, latents, target_embeds, generator, 2)
        generator = torch.Generator().manual_seed(0)  # the same draws, by hand
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, 1000, (2,), generator=generator)
        prediction = pipe.unet(noise_scheduler.add_noise(x0, noise, t), t, target_embeds.expand(2, -1, -1)).sample
    velocity = noise_scheduler.get_velocity(x0, noise, t)
    assert float(loss) == pytest.approx(float(torch.nn.functional.mse_loss(prediction, velocity)), rel=1e-6)
    assert float(loss) != pytest.approx(float(torch.nn.functional.mse_loss(prediction, noise)), rel=1e-3)


def test_lora_tuning_changes_only_the_adapters(stage_inputs):
    pipe, noise_scheduler, latents, target_embeds = stage_inputs
    base = _state(pipe.unet)
    config = ImagicConfig(tune="lora", tune_steps=4, lr_tune=1e-2, lora_rank=4, batch_size=1)
    with imagic_unet(pipe, config) as unet:
        assert unet is pipe.unet
        initial = {id(p): p.detach().clone() for p in lora_parameters(unet)}
        assert initial, "the LoRA adapter was added to to_q/to_k/to_v/to_out.0"
        losses, optimizer = tune_unet(unet, noise_scheduler, latents, target_embeds, config)
        assert len(losses) == 4 and optimizer == "Adam"
        assert any(not torch.equal(p, initial[id(p)]) for p in lora_parameters(unet))
        for name, value in unet.state_dict().items():
            if "lora_" not in name:  # peft renames wrapped layers: base_layer.weight
                assert torch.equal(value, base[name.replace(".base_layer", "")]), name
    assert not lora_parameters(pipe.unet)  # adapter removed: the pipeline is as it was
    assert set(pipe.unet.state_dict()) == set(base)
    assert all(torch.equal(v, base[k]) for k, v in pipe.unet.state_dict().items())


def test_full_tuning_trains_a_copy(stage_inputs):
    pipe, noise_scheduler, latents, target_embeds = stage_inputs
    base = _state(pipe.unet)
    config = ImagicConfig(tune="full", tune_steps=2, lr_tune=1e-3, batch_size=1)
    with imagic_unet(pipe, config) as unet:
        assert unet is not pipe.unet
        tune_unet(unet, noise_scheduler, latents, target_embeds, config)
        changed = sum(not torch.equal(v, base[k]) for k, v in unet.state_dict().items())
    assert changed > len(base) // 2
    assert all(torch.equal(v, base[k]) for k, v in pipe.unet.state_dict().items())


def test_full_tune_end_to_end(tiny_model, picture, tmp_path):
    result = imagic(tiny_model, picture, TARGET, eta=0.5, seed=1, tune="full", cache_dir=tmp_path, **FAST)
    assert result.report["config"]["tune"] == "full"
    assert result.report["stages"]["tune"]["loss_after"] < result.report["stages"]["tune"]["loss_before"] + 1.0
    assert list(tmp_path.glob("tune-*/weights.safetensors"))
    again = imagic(tiny_model, picture, TARGET, eta=0.5, seed=1, tune="full", cache_dir=tmp_path, **FAST)
    assert again.report["cache"] == "hit"
    assert np.array_equal(np.asarray(result.image), np.asarray(again.image))


def test_cache_hit_skips_stages_a_and_b_with_identical_output(tiny_model, picture, tmp_path):
    first = imagic(tiny_model, picture, TARGET, eta=0.7, seed=3, cache_dir=tmp_path, **FAST)
    second = imagic(tiny_model, picture, TARGET, eta=0.7, seed=3, cache_dir=tmp_path, **FAST)
    assert first.report["cache"] == "miss" and second.report["cache"] == "hit"
    assert first.report["stages"]["embed"]["cached"] is False
    assert second.report["stages"]["embed"]["cached"] is True and second.report["stages"]["tune"]["cached"] is True
    assert np.array_equal(np.asarray(first.image), np.asarray(second.image))
    assert second.report["stages"]["embed"]["losses"] == first.report["stages"]["embed"]["losses"]
    trained = first.report["timings"]["embed_s"] + first.report["timings"]["tune_s"]
    cached = second.report["timings"]["embed_s"] + second.report["timings"]["tune_s"]
    assert cached < trained
    # another eta, another seed: still a hit; another tuning setting: stage A reused, B recomputed
    assert imagic(tiny_model, picture, TARGET, eta=0.2, seed=9, cache_dir=tmp_path, **FAST).report["cache"] == "hit"
    other = imagic(tiny_model, picture, TARGET, eta=0.2, seed=9, cache_dir=tmp_path, lora_rank=2, **FAST)
    assert other.report["cache"] == "partial"
    off = imagic(tiny_model, picture, TARGET, eta=0.7, seed=3, use_cache=False, **FAST)
    assert off.report["cache"] == "off"
    assert np.array_equal(np.asarray(off.image), np.asarray(first.image))  # A and B are deterministic


def test_eta_interpolates_between_the_optimized_and_target_embeddings(tiny_model, picture, tmp_path):
    target, optimized = torch.randn(1, 77, 32), torch.randn(1, 77, 32)
    assert torch.equal(interpolate_embeddings(target, optimized, 1.0), target)
    assert torch.equal(interpolate_embeddings(target, optimized, 0.0), optimized)
    assert torch.allclose(interpolate_embeddings(target, optimized, 0.25), 0.25 * target + 0.75 * optimized)
    strong = {**FAST, "embed_steps": 6, "lr_embed": 0.2}  # an optimized embedding far from the target's
    at_zero = imagic(tiny_model, picture, TARGET, eta=0.0, seed=5, cache_dir=tmp_path, **strong)
    at_one = imagic(tiny_model, picture, TARGET, eta=1.0, seed=5, cache_dir=tmp_path, **strong)
    a, b = np.asarray(at_zero.image, dtype=float), np.asarray(at_one.image, dtype=float)
    assert a.shape == b.shape == (32, 32, 3)
    assert np.abs(a - b).mean() > 5  # 13.2 when checked: the conditioning moves the picture


class ScriptedJudge:
    """Scores its calls from ``scores`` in order and accepts from call ``accept_from + 1`` on (never
    when it is None). The sweep calls it in order: eta ascending, each eta's seeds ascending."""

    def __init__(self, scores: list[float], accept_from: int | None) -> None:
        self.scores, self.accept_from, self.calls = scores, accept_from, 0

    def __call__(self, image: Image.Image) -> tuple[float, bool]:
        self.calls += 1
        return self.scores[self.calls - 1], self.accept_from is not None and self.calls > self.accept_from


@pytest.mark.parametrize(
    ("scores", "accept_from", "chosen", "accepted"),
    [
        ([0.1, 0.2, 0.5, 0.9, 0.3, 0.4], 2, (0.5, 11), True),  # the best accepted score
        ([0.1, 0.2, 0.6, 0.6, 0.95, 0.5], 2, (1.0, 10), True),  # not the first accepted eta: a cleaner one
        ([0.1, 0.2, 0.9, 0.9, 0.3, 0.4], 2, None, True),  # a tie at eta 0.5: the better kept seed
        ([0.1, 0.2, 0.3, 0.8, 0.4, 0.5], None, (0.5, 11), False),  # none accepted: the highest score
    ],
)
def test_auto_eta_follows_the_judge(tiny_model, picture, tmp_path, scores, accept_from, chosen, accepted):
    judge = ScriptedJudge(scores, accept_from)
    grid = {"seeds": 2, "eta_grid": (0.0, 0.5, 1.0)}
    result = imagic(tiny_model, picture, TARGET, eta="auto", seed=10, judge=judge, cache_dir=tmp_path, **grid, **FAST)
    report = result.report
    assert judge.calls == 6 and len(report["sweep"]) == 6
    assert [(s["eta"], s["seed"]) for s in report["sweep"]] == [(e, s) for e in (0.0, 0.5, 1.0) for s in (10, 11)]
    assert report["choice"]["accepted"] is accepted
    assert report["eta_mode"] == "auto" and report["judge"] == "ScriptedJudge"
    if chosen is None:  # both seeds at eta 0.5 tie: the better-kept one
        at_half = [s for s in report["sweep"] if s["eta"] == 0.5]
        chosen = (0.5, max(at_half, key=lambda s: s["preservation"])["seed"])
    assert (report["eta"], report["seed"]) == chosen
    picked = next(s for s in result.sweep if (s.eta, s.seed) == (report["eta"], report["seed"]))
    assert np.array_equal(np.asarray(result.image), np.asarray(picked.image))
    assert result.recipe["eta"] == report["eta"] and result.recipe["seed"] == report["seed"]


def test_tries_sweep_again_from_the_next_seed_only_while_none_is_accepted(tiny_model, picture, tmp_path):
    # sweep 1 (seed 10): nothing accepted; sweep 2 (seed 11): accepted from its second eta; no third sweep
    judge = ScriptedJudge([0.1, 0.4, 0.2, 0.3, 0.9, 0.5, 0.0, 0.0, 0.0], accept_from=4)
    grid = {"eta_grid": (0.0, 0.5, 1.0), "tries": 3}
    result = imagic(tiny_model, picture, TARGET, eta="auto", seed=10, judge=judge, cache_dir=tmp_path, **grid, **FAST)
    report = result.report
    assert judge.calls == 6 and report["tries"] == {"allowed": 3, "drawn": 2}
    assert [(s["eta"], s["seed"]) for s in report["sweep"]] == [(e, s) for s in (10, 11) for e in (0.0, 0.5, 1.0)]
    assert (report["eta"], report["seed"]) == (0.5, 11) and report["choice"]["accepted"]
    assert result.recipe["seed"] == 11 and result.recipe["eta"] == 0.5
    judge = ScriptedJudge([0.1, 0.4, 0.2, 0.3, 0.9, 0.5], accept_from=None)  # never accepted: tries run out
    result = imagic(tiny_model, picture, TARGET, eta="auto", seed=10, judge=judge, cache_dir=tmp_path,
                    eta_grid=(0.0, 0.5, 1.0), tries=2, **FAST)  # fmt: skip
    assert judge.calls == 6 and result.report["tries"]["drawn"] == 2
    assert (result.report["eta"], result.report["seed"]) == (0.5, 11) and not result.report["choice"]["accepted"]
    with pytest.raises(RetouchError, match="tries must be"):
        imagic(tiny_model, picture, TARGET, eta="auto", judge=judge, tries=0, **FAST)


def test_report_and_recipe_fields(tiny_model, picture, tmp_path):
    result = imagic(tiny_model, picture, TARGET, eta=0.6, seed=2, cache_dir=tmp_path, **FAST)
    report, recipe = result.report, result.recipe
    keys = "task target eta eta_mode seed cache cache_keys config stages sweep choice metrics input timings"
    assert set(keys.split()) | {"preservation_metric"} <= set(report)
    assert report["eta_mode"] == "fixed" and report["preservation_metric"] == "psnr"
    assert set(report["stages"]) == {"embed", "tune"}
    for stage in report["stages"].values():
        assert {"loss_before", "loss_after", "losses", "seconds", "cached"} <= set(stage)
    sizes = {"embed_steps": 3, "tune_steps": 3, "batch_size": 1, "lora_rank": 8, "train_seed": 0}
    assert report["config"] == {"tune": "lora", "lr_embed": 1e-3, "lr_tune": 1e-3, **sizes}
    assert 0 < report["metrics"]["ssim"] <= 1 and report["metrics"]["psnr"] > 0
    assert recipe["task"] == "imagic" and recipe["eta"] == 0.6 and recipe["prompt"] == TARGET
    assert (recipe["width"], recipe["height"]) == (32, 32)
    assert recipe["cache"] == str(tmp_path.resolve())


def test_bad_arguments(tiny_model, picture, tmp_path, monkeypatch):
    monkeypatch.setattr("retouch.metrics.clip_score.bundled_clip_path", lambda: tmp_path / "no-clip")
    with pytest.raises(RetouchError, match="eta must be"):
        imagic(tiny_model, picture, TARGET, eta=3.0, **FAST)
    with pytest.raises(RetouchError, match="tune"):
        imagic(tiny_model, picture, TARGET, tune="dreambooth", **FAST)
    with pytest.raises(RetouchError, match="needs a judge"):
        imagic(tiny_model, picture, "a cat wearing a hat", eta="auto", use_cache=False, **FAST)
    assert ETA_GRID[0] == 0.0 and ETA_GRID[-1] == 1.6 and len(ETA_GRID) == 17


def test_a_local_region_keeps_the_input_outside_its_mask(tiny_model, picture, tmp_path):
    result = imagic(tiny_model, picture, TARGET, eta=0.8, seed=4, region="foreground", cache_dir=tmp_path, **FAST)
    mask = np.asarray(result.mask) > 127  # (32, 32): 255 = redrawn
    assert result.report["region"]["region"] == "foreground" and result.recipe["region"] == "foreground"
    assert 0 < mask.mean() < 1 and result.report["region"]["mask_area"] == pytest.approx(mask.mean())
    band = feather_alpha(mask) > 0  # the mask and the composite's feather band
    output = np.asarray(result.image)
    assert np.array_equal(output[~band], picture[~band])  # the input, bit for bit
    assert not np.array_equal(output[mask], picture[mask])
    files = result.save(tmp_path / "out.png")
    assert np.array_equal(np.asarray(Image.open(files["mask"])) > 127, mask)


def test_the_global_region_samples_the_whole_picture(tiny_model, picture, tmp_path):
    result = imagic(tiny_model, picture, TARGET, eta=0.8, seed=4, region="global", cache_dir=tmp_path, **FAST)
    assert result.mask is None and result.report["region"] == {"asked": "global", "region": "global", "mask_area": 1.0}
    assert result.recipe["region"] == "global"
    assert (np.asarray(result.image) != picture).any(axis=-1).mean() > 0.9
    assert "mask" not in result.save(tmp_path / "out.png")


@pytest.mark.parametrize(("where", "region"), [("centre", "foreground"), ("border", "background")])
def test_auto_region_follows_the_map(stage_inputs, picture, monkeypatch, where, region):
    """The map's mass in the middle: the object; on the border: the background, the object kept."""
    pipe, _, latents, target_embeds = stage_inputs
    y, x = np.mgrid[:16, :16]
    blob = ((x - 8) ** 2 + (y - 8) ** 2 < 25).astype(np.float32)  # the disc's latent cells
    fake = blob if where == "centre" else 1.0 - blob
    monkeypatch.setattr(masks, "difference_map", lambda *args, **kwargs: fake)
    local = find_region(pipe, latents, target_embeds, target_embeds, picture, "auto", TARGET, None, seed=0)
    assert local.decision.region == region and local.decision.confidence > 0.5
    disc = (picture == (220, 40, 40)).all(axis=-1)
    assert (local.pixel_mask[disc].mean() > 0.9) if region == "foreground" else not local.pixel_mask[disc].any()
    assert find_region(pipe, latents, target_embeds, target_embeds, picture, "global", TARGET, None, 0) is None
    with pytest.raises(RetouchError, match="unknown region"):
        find_region(pipe, latents, target_embeds, target_embeds, picture, "sky", TARGET, None, 0)


def test_step_counts_are_sized_to_the_model() -> None:
    from types import SimpleNamespace

    def pipe(sample_size: int) -> SimpleNamespace:
        unet = SimpleNamespace(config=SimpleNamespace(sample_size=sample_size))
        return SimpleNamespace(unet=unet, vae_scale_factor=8)

    small, large = imagic_config(pipe(8)), imagic_config(pipe(64))  # 64 x 64 and 512 x 512 pictures
    assert (small.embed_steps, small.tune_steps, small.batch_size) == (150, 0, 4)  # measured: tuning hurt
    assert (large.embed_steps, large.tune_steps, large.lr_tune, large.batch_size) == (500, 1000, 1e-4, 1)
    assert imagic_config(pipe(8), tune_steps=5, lr_tune=None).tune_steps == 5  # overrides, None ignored
    assert imagic_config(pipe(64), "full").lr_tune == 2e-6
    with pytest.raises(RetouchError, match="tune_steps must be at least 0"):
        imagic_config(pipe(8), tune_steps=-1)
