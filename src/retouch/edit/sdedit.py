"""SDEdit (Meng et al. 2022): img2img of the whole picture, no mask.

Noise the image to the level ``strength`` implies and denoise it under the target caption. This
is diffusers' ``StableDiffusionImg2ImgPipeline`` built from the loaded pipeline's components.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

from retouch.core.timesteps import img2img_timesteps


@torch.no_grad()
def sdedit(
    pipe: StableDiffusionPipeline,
    pixels: np.ndarray,
    prompt: str,
    scheduler: SchedulerMixin,
    strength: float,
    steps: int,
    guidance_scale: float,
    generator: torch.Generator | None,
    progress: bool = False,
) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8, the whole picture redrawn under ``prompt``."""
    scheduler.set_timesteps(steps)
    img2img_timesteps(scheduler, steps, strength)  # a clear error where diffusers' would be cryptic
    img2img = StableDiffusionImg2ImgPipeline(
        **{**pipe.components, "scheduler": scheduler}, requires_safety_checker=False
    )
    img2img.set_progress_bar_config(disable=not progress, leave=False)
    output = img2img(
        prompt=prompt,
        image=Image.fromarray(pixels),
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=generator,
        output_type="np",
    )
    return (output.images[0] * 255).round().astype(np.uint8)
