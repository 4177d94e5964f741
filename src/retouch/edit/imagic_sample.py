"""Imagic's stage C: sample with the tuned UNet from ``e = eta * e_tgt + (1 - eta) * e_opt``
(Kawar et al. 2022, eq. 4), with classifier-free guidance, inside the region the edit touches
(``retouch.edit.imagic_region``) or over the whole picture, and score every sample: the judge's
verdict (for ``eta="auto"``) and how well the input is kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image

from retouch.core.generate import generate
from retouch.core.latents import text_embeddings
from retouch.core.schedulers import SchedulerName
from retouch.edit.imagic_region import ImagicRegionChoice, LocalRegion, find_region, sample_in_region
from retouch.edit.imagic_stages import ImagicRun
from retouch.edit.strength import Judge
from retouch.metrics.masked import masked_psnr, masked_ssim


@dataclass(frozen=True)
class Sampling:
    """Stage C's denoising settings (never cached: they cost only sampling)."""

    steps: int
    guidance_scale: float
    scheduler: SchedulerName


@dataclass
class SweepSample:
    """One picture stage C drew, at one (eta, seed), with its scores."""

    eta: float
    seed: int
    image: Image.Image  # the input's size
    scores: dict[str, Any]  # judge_score, accepted, psnr, ssim, lpips, preservation
    mask: np.ndarray | None = None  # (H, W) bool: the region redrawn (None: the whole picture)

    def to_dict(self) -> dict[str, Any]:
        return {"eta": self.eta, "seed": self.seed, **self.scores}


def interpolate_embeddings(target: torch.Tensor, optimized: torch.Tensor, eta: float) -> torch.Tensor:
    """e = eta * e_tgt + (1 - eta) * e_opt (eq. 4); eta > 1 extrapolates past the target."""
    return eta * target + (1.0 - eta) * optimized


def stage_c(
    run: ImagicRun,
    unet: UNet2DConditionModel,
    optimized: torch.Tensor,
    local: LocalRegion | None,
    etas: Sequence[float],
    seeds: Sequence[int],
    sampling: Sampling,
    judge: Judge | None = None,
    lpips_model: torch.nn.Module | None = None,
) -> list[SweepSample]:
    """Stage C at every (eta, seed), etas outermost: the pictures cropped back to the input's size,
    each scored against the input (and judged when ``judge`` is given)."""
    pipe, start = run.pipe, time.perf_counter()
    negative = text_embeddings(pipe, "", sampling.guidance_scale)[1] if local is not None else None
    sampler = (
        pipe
        if unet is pipe.unet
        else StableDiffusionPipeline(**{**pipe.components, "unet": unet}, requires_safety_checker=False)
    )
    height, width = run.pixels.shape[:2]
    samples = []
    for eta in etas:
        conditioning = interpolate_embeddings(run.target_embeds, optimized, eta).to(pipe.device, pipe.unet.dtype)
        for seed in seeds:
            picture, mask = sample_once(sampler, run, local, conditioning, negative, sampling, seed)
            picture, mask = picture[:height, :width], None if mask is None else mask[:height, :width]
            scores = score_sample(Image.fromarray(picture), run.pixels, judge, lpips_model)
            samples.append(SweepSample(eta, seed, Image.fromarray(picture), scores, mask))
    run.timings["sample_s"] = run.timings.get("sample_s", 0.0) + time.perf_counter() - start
    return samples


def stage_c_region(
    run: ImagicRun, optimized: torch.Tensor, region: ImagicRegionChoice, source: str | None
) -> LocalRegion | None:
    """The region stage C redraws (None: the whole picture), from a DiffEdit map of ``e_opt``
    against ``e_tgt`` on the model as stage A saw it, before any tuning."""
    return find_region(
        run.pipe,
        run.latents,
        optimized,
        run.target_embeds,
        run.padded,
        region,
        run.target,
        source,
        seed=run.config.train_seed,
    )


def sample_once(
    sampler: StableDiffusionPipeline,
    run: ImagicRun,
    local: LocalRegion | None,
    conditioning: torch.Tensor,
    negative: torch.Tensor | None,
    sampling: Sampling,
    seed: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One conditioning (1, tokens, dim), one seed: (the (H', W', 3) picture, the (H', W') mask
    redrawn, or None when the whole picture was sampled)."""
    if local is not None:
        return sample_in_region(
            sampler,
            run.latents,
            local,
            conditioning,
            negative,
            run.padded,
            scheduler=sampling.scheduler,
            steps=sampling.steps,
            guidance_scale=sampling.guidance_scale,
            seed=seed,
            progress=run.progress,
        )
    output = generate(
        sampler,
        run.target,
        seed=seed,
        steps=sampling.steps,
        guidance_scale=sampling.guidance_scale,
        scheduler=sampling.scheduler,
        width=run.padded.shape[1],
        height=run.padded.shape[0],
        progress=run.progress,
        prompt_embeds_fn=lambda _pipe, _prompt: conditioning,
    ).images[0]
    return np.asarray(output), None


def score_sample(
    picture: Image.Image, source: np.ndarray, judge: Judge | None, lpips_model: torch.nn.Module | None
) -> dict[str, Any]:
    """Judge verdict and preservation of ``source`` (JSON-safe: an identical picture's PSNR is
    None). Preservation is 1 - LPIPS with an LPIPS model, else PSNR (identical: best)."""
    output = np.asarray(picture)
    everywhere = np.ones(source.shape[:2], dtype=bool)
    psnr, ssim = masked_psnr(source, output, everywhere), masked_ssim(source, output, everywhere)
    scores: dict[str, Any] = {"psnr": psnr if math.isfinite(psnr) else None, "ssim": ssim}
    if lpips_model is not None:
        from retouch.metrics.lpips import lpips_distance

        scores["lpips"] = lpips_distance(lpips_model, source, output)
        scores["preservation"] = 1.0 - scores["lpips"]
    else:
        scores["preservation"] = psnr if math.isfinite(psnr) else 1e9
    if judge is not None:
        score, accepted = judge(picture)
        scores["judge_score"], scores["accepted"] = float(score), bool(accepted)
    return scores
