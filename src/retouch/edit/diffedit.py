"""DiffEdit, the paper's full method (Couairon et al. 2022): automatic mask, DDIM inversion of
the image under the source caption, then DDIM decoding under the target caption inside the mask.

diffusers' ``StableDiffusionDiffEditPipeline`` built from the loaded pipeline's components with a
``DDIMScheduler`` and a ``DDIMInverseScheduler``: ``generate_mask``, ``invert``, then ``__call__``.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import (
    DDIMInverseScheduler,
    DDIMScheduler,
    StableDiffusionDiffEditPipeline,
    StableDiffusionPipeline,
)
from PIL import Image

from retouch.core.timesteps import img2img_timesteps
from retouch.edit.masks import MaskConfig


@torch.no_grad()
def diffedit(
    pipe: StableDiffusionPipeline,
    pixels: np.ndarray,
    source_prompt: str,
    target_prompt: str,
    strength: float,
    steps: int,
    guidance_scale: float,
    generator: torch.Generator | None,
    config: MaskConfig | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns the edited (H, W, 3) uint8 picture and the (h, w) bool latent mask DiffEdit used.
    ``config`` supplies DiffEdit's noise draws and encoding ratio (``MaskConfig()`` when None)."""
    config = config or MaskConfig()
    config_dict = pipe.scheduler.config
    diffedit_pipe = StableDiffusionDiffEditPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=DDIMScheduler.from_config(config_dict),
        safety_checker=None,
        feature_extractor=None,
        inverse_scheduler=DDIMInverseScheduler.from_config(config_dict),
        requires_safety_checker=False,
    )
    diffedit_pipe.set_progress_bar_config(disable=not progress, leave=False)
    diffedit_pipe.scheduler.set_timesteps(steps)
    img2img_timesteps(diffedit_pipe.scheduler, steps, strength)  # refuse a strength that runs no step
    image = Image.fromarray(pixels)
    mask = diffedit_pipe.generate_mask(
        image=image,
        source_prompt=source_prompt,
        target_prompt=target_prompt,
        num_maps_per_mask=config.num_draws,
        mask_encode_strength=config.noise_level,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=generator,
    )  # (1, h, w) in {0, 1}
    # Inversion without guidance: DDIM inversion is exact only for the conditional model's ODE.
    inverted = diffedit_pipe.invert(
        prompt=source_prompt,
        image=image,
        num_inference_steps=steps,
        inpaint_strength=strength,
        guidance_scale=1.0,
        generator=generator,
    ).latents
    output = diffedit_pipe(
        prompt=target_prompt,
        negative_prompt=source_prompt,
        mask_image=mask,
        image_latents=inverted,
        inpaint_strength=strength,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=generator,
        output_type="np",
    )
    return (output.images[0] * 255).round().astype(np.uint8), mask[0].astype(bool)
