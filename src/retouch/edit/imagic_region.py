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

Both steps are ``edit.region_pipeline``'s, as ``edit`` runs them; this module fits Imagic's
arguments to them. ``region="global"`` skips all this: the paper's Imagic, the whole picture sampled.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from retouch.core.schedulers import SchedulerName
from retouch.edit import masks
from retouch.edit.layer import DEFAULT_FEATHER_PX
from retouch.edit.region_pipeline import EditRegion, find_edit_region
from retouch.edit.region_pipeline import sample_in_region as sample_edit_region
from retouch.errors import RetouchError

ImagicRegionChoice = Literal["auto", "foreground", "background", "global"]
IMAGIC_REGIONS: tuple[str, ...] = ("auto", "foreground", "background", "global")
LocalRegion = EditRegion  # the region stage C redraws (its old name here)
NO_DIFFERENCE = (
    "the optimized embedding and the target caption agree everywhere; "
    "pass --region global to redraw the whole picture"
)


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
) -> EditRegion | None:
    """The region stage C redraws, or None for the whole picture (``region="global"``, or a
    global decision). ``latents`` (1, 4, h, w) encode ``padded`` (H', W', 3); ``optimized`` and
    ``target_embeds`` are (1, tokens, dim); ``pipe.unet`` is the model stage A used (no LoRA)."""
    if region not in IMAGIC_REGIONS:
        raise RetouchError(f"unknown region {region!r}; choose one of: {', '.join(IMAGIC_REGIONS)}")
    if region == "global":
        return None
    found = find_edit_region(
        pipe,
        latents,
        padded,
        optimized,
        target_embeds,
        source=source or None,
        target=target,
        seed=seed,
        region=region,
        config=config,
        if_empty=NO_DIFFERENCE,
    )
    return None if found.region == "global" else found


@torch.no_grad()
def sample_in_region(
    sampler: StableDiffusionPipeline,
    latents: torch.Tensor,
    local: EditRegion,
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
    """Stage C inside ``local``'s mask from ``conditioning`` (1, tokens, dim), from pure noise
    there: the picture composited onto ``padded`` (H', W', 3) uint8, and the final (H', W')
    pixel mask."""
    result = sample_edit_region(
        sampler,
        latents,
        local,
        conditioning,
        negative,
        picture=padded,
        background=padded,
        scheduler=scheduler,
        strength=1.0,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
        config=config,
        feather=feather,
        progress=progress,
    )
    return result.output, result.mask
