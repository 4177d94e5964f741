"""Inpainting with a given mask: the Blended Latent Diffusion loop (``blend.py``) with the user's
mask in place of the automatic one. A latent is edited when any pixel of its cell is."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from retouch.edit.blend import blended_latent_diffusion
from retouch.edit.masks import downsample_mask


def inpaint(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    pixel_mask: np.ndarray,
    prompt_embeds: torch.Tensor,
    negative_embeds: torch.Tensor | None,
    scheduler: SchedulerMixin,
    strength: float,
    steps: int,
    guidance_scale: float,
    generator: torch.Generator | None,
    progress: bool = False,
) -> torch.Tensor:
    """Edit ``latents`` (1, 4, h, w) where the (H, W) ``pixel_mask`` is True."""
    latent_mask = downsample_mask(pixel_mask, pipe.vae_scale_factor)  # (h, w)
    return blended_latent_diffusion(
        pipe,
        latents,
        latent_mask,
        prompt_embeds,
        negative_embeds,
        scheduler,
        strength=strength,
        steps=steps,
        guidance_scale=guidance_scale,
        generator=generator,
        progress=progress,
    )
