"""Imagic, localized: stage C redraws only the region the edit touches, the rest stays the input's.

The paper's stage C samples the whole picture from noise, so everything the fine-tuned model does
not reproduce exactly (a background shade, the object's place) drifts. retouch finds the region
first, as its automatic edit does, with the optimized embedding standing in for a source caption:

1. The map: DiffEdit's ``mean |eps(e_tgt) - eps(e_opt)|`` with the model as stage A saw it. Stage
   A moved ``e_opt`` from the target caption's embedding towards what the picture shows, so the
   two disagree where the picture differs from the target.
2. The region: from the map (foreground when its mass sits away from the border), weighed with
   the captions when a source caption is given; or the one the caller names.
3. The mask: the map cut by the region and snapped to the object the picture draws.
4. Stage C samples inside the mask with Blended Latent Diffusion (the input's latents outside),
   and the decoded picture is composited onto the input (a foreground mask first snapped to the
   old and the new object's edges): outside the mask and its feather band, the input bit for bit.

``region="global"`` skips all this: the paper's Imagic, the whole picture sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from retouch.core.latents import decode
from retouch.core.schedulers import SchedulerName, make_scheduler
from retouch.edit import masks
from retouch.edit.blend import blended_latent_diffusion
from retouch.edit.layer import DEFAULT_FEATHER_PX, composite, feather_alpha
from retouch.edit.region import RegionDecision, caption_region, combine, image_evidence, is_recolor
from retouch.errors import RetouchError

ImagicRegionChoice = Literal["auto", "foreground", "background", "global"]
IMAGIC_REGIONS: tuple[str, ...] = ("auto", "foreground", "background", "global")


@dataclass
class LocalRegion:
    decision: RegionDecision
    pixel_mask: np.ndarray  # (H', W') bool at the padded size, True = redrawn
    latent_mask: np.ndarray  # (h, w) bool
    early_mask: np.ndarray  # (h, w) bool, the latent mask while the layout forms (see blend)
    recolor: bool  # the captions say only the colour changes: the object keeps its outline


@torch.no_grad()
def find_region(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    optimized: torch.Tensor,
    target_embeds: torch.Tensor,
    padded: np.ndarray,
    region: ImagicRegionChoice,
    target: str,
    source: str | None,
    seed: int,
    config: masks.MaskConfig | None = None,
) -> LocalRegion | None:
    """The region stage C redraws, or None for the whole picture (``region="global"``, or a
    global decision). ``latents`` (1, 4, h, w) encode ``padded`` (H', W', 3); ``optimized`` and
    ``target_embeds`` are (1, tokens, dim); ``pipe.unet`` is the model stage A used (no LoRA)."""
    if region not in IMAGIC_REGIONS:
        raise RetouchError(f"unknown region {region!r}; choose one of: {', '.join(IMAGIC_REGIONS)}")
    if region == "global":
        return None
    config = config or masks.MaskConfig()
    dtype = pipe.unet.dtype
    generator = torch.Generator("cpu").manual_seed(seed)
    raw = masks.difference_map(
        pipe, latents.to(dtype), optimized.to(dtype), target_embeds.to(dtype), generator, config
    )  # (h, w)
    normalized = masks.normalize_map(raw, config)
    evidence = image_evidence(normalized)
    if region != "auto":
        decision = RegionDecision(region, 1.0, {"given": "region", "image": evidence})
    elif source:
        decision = combine(caption_region(source, target), evidence)
    else:
        p_background = evidence["p_background"]
        decision = RegionDecision(
            "background" if p_background > 0.5 else "foreground",
            round(max(p_background, 1.0 - p_background), 4),
            {"image": evidence, "rule": "the map's mass on the border (no source caption)"},
        )
    if decision.region == "global":
        return None
    coarse = masks.region_mask(normalized, decision.region, config)
    if not coarse.any():
        raise RetouchError(
            "the automatic mask is empty: the optimized embedding and the target caption agree everywhere; "
            "pass --region global to redraw the whole picture"
        )
    pixel, latent, early = masks.snap_to_object(coarse, decision.region, padded, pipe.vae_scale_factor, config)
    recolor = bool(source) and is_recolor(source, target)
    return LocalRegion(decision, pixel, latent, early, recolor)


@torch.no_grad()
def sample_in_region(
    sampler: StableDiffusionPipeline,
    latents: torch.Tensor,
    local: LocalRegion,
    conditioning: torch.Tensor,
    negative: torch.Tensor | None,
    padded: np.ndarray,
    scheduler: SchedulerName,
    steps: int,
    guidance_scale: float,
    seed: int,
    progress: bool = False,
    config: masks.MaskConfig | None = None,
    feather: int = DEFAULT_FEATHER_PX,
) -> tuple[np.ndarray, np.ndarray]:
    """Stage C inside ``local``'s mask from ``conditioning`` (1, tokens, dim): the picture
    composited onto ``padded`` (H', W', 3) uint8, and the final (H', W') pixel mask."""
    config = config or masks.MaskConfig()
    hold = {"early_mask": local.early_mask, "early_fraction": config.hold_fraction}
    z = blended_latent_diffusion(
        sampler, latents, local.latent_mask, conditioning, negative,
        make_scheduler(scheduler, sampler.scheduler.config), 1.0, steps, guidance_scale,
        torch.Generator("cpu").manual_seed(seed), progress, **hold,
    )  # fmt: skip
    edited = decode(sampler, z)  # (H', W', 3)
    final = local.pixel_mask
    if local.decision.region == "foreground":
        final = masks.refine_mask(final, padded, edited, config, keep_outline=local.recolor)
    return composite(padded, edited, feather_alpha(final, feather)), final
