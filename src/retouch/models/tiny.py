"""Tiny random Stable Diffusion components for tests and placeholders.

Follows diffusers' own pipeline tests: a few-thousand-parameter UNet, CLIP text encoder
and VAE with random weights. The pictures are noise; the plumbing is real.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

# Words that get one token each; anything else falls back to one token per character.
DEFAULT_WORDS: tuple[str, ...] = (
    "a", "an", "on", "background", "pastel", "small", "large",
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black", "gray",
    "circle", "square", "triangle", "cross", "star",
)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-level BPE alphabet: one printable unicode character per byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return list(symbols.values())


def tiny_tokenizer(words: Sequence[str] = DEFAULT_WORDS, model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over single bytes plus merges that make each of ``words`` one token."""
    symbols = _byte_symbols()
    vocab: dict[str, int] = {}
    for token in [*symbols, *(s + "</w>" for s in symbols)]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:  # merge left to right: "r e", "re d</w>"
            merge = (pieces[0], pieces[1])
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            if merge not in merges:
                merges.append(merge)
            vocab.setdefault(pieces[0], len(vocab))
    for special in (BOS, EOS):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def tiny_components(seed: int = 0, sample_size: int = 16, in_channels: int = 4) -> dict[str, Any]:
    """The components of a tiny random StableDiffusionPipeline making ``2 * sample_size`` pixel images
    (``in_channels=8``: an InstructPix2Pix UNet, which also reads the input picture's latents).

    Block layout follows SD 1.x (cross-attention in every level but the last), at toy width.
    """
    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's RNG
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=32,
            sample_size=2 * sample_size,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
    }


def tiny_pipeline(seed: int = 0, sample_size: int = 16, in_channels: int = 4) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(**tiny_components(seed, sample_size, in_channels), requires_safety_checker=False)


def save_tiny_pipeline(
    folder: str | os.PathLike[str], seed: int = 0, sample_size: int = 16, in_channels: int = 4
) -> Path:
    """Save a tiny random pipeline as a diffusers folder (safetensors weights) and return it."""
    folder = Path(folder)
    tiny_pipeline(seed, sample_size, in_channels).save_pretrained(folder, safe_serialization=True)
    return folder
