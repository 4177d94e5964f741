"""Blended Latent Diffusion (Avrahami et al. 2022, "Blended Latent Diffusion", Algorithm 1).

img2img inside a latent mask: the image latents are noised by the scheduler to the level the
strength implies, denoised under the target caption with classifier-free guidance, and after every
step the region outside the mask is replaced by the original latents noised to the next step's
level, so the unedited region stays the input's while the edited one is generated in its context.
The decoded picture is composited onto the input in pixel space afterwards (``layer.composite``).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from retouch.core.timesteps import img2img_timesteps, step_kwargs


@torch.no_grad()
def blended_latent_diffusion(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    latent_mask: np.ndarray,
    prompt_embeds: torch.Tensor,
    negative_embeds: torch.Tensor | None,
    scheduler: SchedulerMixin,
    strength: float,
    steps: int,
    guidance_scale: float,
    generator: torch.Generator | None,
    progress: bool = False,
    keep_object_mask: np.ndarray | None = None,
    keep_object_fraction: float = 0.0,
    *,
    early_mask: np.ndarray | None = None,
    early_fraction: float | None = None,
) -> torch.Tensor:
    """Edit ``latents`` (1, 4, h, w) where ``latent_mask`` (h, w) is True; returns the edited latents.

    Args:
        negative_embeds: the empty prompt's embeddings for classifier-free guidance, or None without.
        scheduler: a fresh scheduler (its state advances here).
        keep_object_mask: a smaller (h, w) mask for the first ``keep_object_fraction`` of the
            steps, while the layout forms: a background edit keeps every latent cell the object
            touches until then, so the model sees the object whole and does not draw it again
            elsewhere; the cells it shares with the background are edited afterwards, to take the
            new colour.
        early_mask, early_fraction: the old names of ``keep_object_mask`` and
            ``keep_object_fraction``, still accepted.
    """
    keep_object_mask = early_mask if keep_object_mask is None else keep_object_mask
    keep_object_fraction = keep_object_fraction if early_fraction is None else early_fraction
    z0 = latents  # (1, 4, h, w)
    mask = torch.from_numpy(latent_mask).to(z0.device, z0.dtype)[None, None]  # (1, 1, h, w)
    keep_object = mask
    if keep_object_mask is not None:
        keep_object = torch.from_numpy(keep_object_mask).to(z0.device, z0.dtype)[None, None]  # (1, 1, h, w)
    embeds = prompt_embeds if negative_embeds is None else torch.cat([negative_embeds, prompt_embeds])
    scheduler.set_timesteps(steps, device=z0.device)
    timesteps = img2img_timesteps(scheduler, steps, strength)
    keep_object_steps = round(keep_object_fraction * len(timesteps))
    extra = step_kwargs(scheduler, generator)

    # One noise draw serves the start and every re-imposed level: the kept region follows
    # q(z_t | z_0) along a single trajectory, as in Blended Latent Diffusion.
    noise = randn_tensor(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    z = scheduler.add_noise(z0, noise, timesteps[:1])
    for i, t in enumerate(tqdm(timesteps, desc="edit", leave=False, disable=not progress)):
        model_input = z if negative_embeds is None else torch.cat([z, z])  # (2, 4, h, w) with CFG
        model_input = scheduler.scale_model_input(model_input, t)  # sigma scaling for Euler/LMS
        eps = pipe.unet(model_input, t, encoder_hidden_states=embeds).sample
        if negative_embeds is not None:
            eps_uncond, eps_text = eps.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_text - eps_uncond)
        z = scheduler.step(eps, t, z, **extra).prev_sample
        # Alg. 1, line 7: outside the mask, the original noised to the level z now has.
        known = scheduler.add_noise(z0, noise, timesteps[i + 1 : i + 2]) if i + 1 < len(timesteps) else z0
        m = keep_object if i < keep_object_steps else mask
        z = m * z + (1 - m) * known
    return z
