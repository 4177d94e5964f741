"""Stable Diffusion 1.5's architecture with random weights, for tests and benchmarks that must run
at real scale without the real weights (which are never available offline).

UNet ~860M parameters, CLIP ViT-L/14 text encoder and SD's VAE, with their published configs; the
tokenizer and scheduler are the tiny pipeline's (``retouch.models.tiny``). The pictures are noise;
the sizes, memory and plumbing are SD-1.5's.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from retouch.models.tiny import tiny_components


def sd15_pipeline(seed: int = 0, sample_size: int = 64) -> StableDiffusionPipeline:
    """SD-1.5's architecture (UNet ~860M parameters, CLIP ViT-L/14 text encoder, SD VAE), random
    weights. ``sample_size`` (latent cells a side) sets only the default picture size (64: 512x512)."""
    components = tiny_components(seed)  # tokenizer and scheduler only; the models are replaced
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        components["unet"] = UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=4,
            out_channels=4,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
        ).eval()
        components["vae"] = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        ).eval()
        components["text_encoder"] = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=768,
                intermediate_size=3072,
                num_attention_heads=12,
                num_hidden_layers=12,
                max_position_embeddings=77,
                hidden_act="quick_gelu",
                projection_dim=768,
                bos_token_id=components["tokenizer"].bos_token_id,
                eos_token_id=components["tokenizer"].eos_token_id,
                pad_token_id=components["tokenizer"].pad_token_id,
            )
        ).eval()
    return StableDiffusionPipeline(**components, requires_safety_checker=False)
