"""Pixels <-> latents for the editing methods, and the prompt embeddings they share."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import StableDiffusionPipeline


def pixel_multiple(pipe: StableDiffusionPipeline) -> int:
    """Pixel sizes the model takes without resizing: the VAE's factor times the UNet's
    (each UNet down block but the last halves the latents)."""
    return pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)


@torch.no_grad()
def encode(pipe: StableDiffusionPipeline, pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 4, H/f, W/f) scaled latents. The posterior's mean, not a sample:
    the unedited region must come back as close to the input as the VAE allows."""
    vae = pipe.vae
    image = torch.tensor(pixels).permute(2, 0, 1)[None].to(pipe.device, vae.dtype) / 127.5 - 1.0
    latents = vae.encode(image).latent_dist.mode()  # (1, 4, H/f, W/f)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor


@torch.no_grad()
def decode(pipe: StableDiffusionPipeline, latents: torch.Tensor) -> np.ndarray:
    """(1, 4, h, w) scaled latents -> (H, W, 3) uint8, rounded as diffusers' ``numpy_to_pil`` does."""
    vae = pipe.vae
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor + shift).sample  # (1, 3, H, W)
    image = (image / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).float().cpu().numpy()
    return (image * 255).round().astype(np.uint8)


@torch.no_grad()
def text_embeddings(
    pipe: StableDiffusionPipeline, prompt: str, guidance_scale: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(prompt embeddings, empty-prompt embeddings or None without guidance), each (1, tokens, dim)."""
    do_cfg = guidance_scale > 1.0
    prompt_embeds, negative_embeds = pipe.encode_prompt(prompt, pipe.device, 1, do_cfg, None)
    return prompt_embeds, negative_embeds if do_cfg else None
