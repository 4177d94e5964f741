"""Test helper: write a diffusers pipeline as an original (LDM-format) single-file checkpoint.

The inverse of diffusers' single-file conversion, for SD-1.x-style block layouts of any depth;
it lets the tests load a tiny model through ``StableDiffusionPipeline.from_single_file``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}  # fmt: skip
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_prefixes(pipe: StableDiffusionPipeline) -> dict[str, str]:
    config = pipe.unet.config
    layers = config.layers_per_block
    prefixes = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
                "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
                "mid_block.attentions.0.": "middle_block.1."}  # fmt: skip
    for j in range(2):
        prefixes[f"mid_block.resnets.{j}."] = f"middle_block.{2 * j}."
    for i in range(len(config.block_out_channels)):
        for j in range(layers):
            block = (layers + 1) * i + j + 1
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{block}.0."
            prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{block}.1."
        prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(layers + 1) * (i + 1)}.0.op."
        has_attention = "CrossAttn" in config.up_block_types[i]
        for j in range(layers + 1):
            block = (layers + 1) * i + j
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{block}.0."
            prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{block}.1."
        upsampler = f"output_blocks.{(layers + 1) * i + layers}.{2 if has_attention else 1}."
        prefixes[f"up_blocks.{i}.upsamplers.0."] = upsampler
    return prefixes


def _rename(key: str, prefixes: dict[str, str]) -> str:
    for old, new in sorted(prefixes.items(), key=lambda item: -len(item[0])):
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def unet_to_ldm(pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
    prefixes = _unet_prefixes(pipe)
    out = {}
    for key, value in pipe.unet.state_dict().items():
        for old, new in RESNET.items():  # layer names inside resnet blocks differ too
            key = re.sub(rf"(resnets\.\d+\.){old}\.", rf"\g<1>{new}.", key)
        out["model.diffusion_model." + _rename(key, prefixes)] = value
    return out


def vae_to_ldm(pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
    levels = len(pipe.vae.config.block_out_channels)
    prefixes = {"encoder.conv_norm_out.": "encoder.norm_out.", "decoder.conv_norm_out.": "decoder.norm_out.",
                "encoder.mid_block.attentions.0.": "encoder.mid.attn_1.",
                "decoder.mid_block.attentions.0.": "decoder.mid.attn_1."}  # fmt: skip
    for part in ("encoder", "decoder"):
        for j in range(2):
            prefixes[f"{part}.mid_block.resnets.{j}."] = f"{part}.mid.block_{j + 1}."
    for i in range(levels):
        for j in range(pipe.vae.config.layers_per_block + 1):
            prefixes[f"encoder.down_blocks.{i}.resnets.{j}."] = f"encoder.down.{i}.block.{j}."
            prefixes[f"decoder.up_blocks.{i}.resnets.{j}."] = f"decoder.up.{levels - 1 - i}.block.{j}."
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{levels - 1 - i}.upsample."
    out = {}
    for key, value in pipe.vae.state_dict().items():
        key = _rename(key, prefixes).replace(".conv_shortcut.", ".nin_shortcut.")
        if ".attn_1." in key:
            for old, new in VAE_ATTENTION.items():
                key = key.replace(f".attn_1.{old}.", f".attn_1.{new}.")
            if value.ndim == 2:  # LDM's attention uses 1x1 convolutions
                value = value[:, :, None, None]
        out["first_stage_model." + key] = value
    return out


def save_ldm_checkpoint(pipe: StableDiffusionPipeline, path: Path) -> Path:
    state = {**unet_to_ldm(pipe), **vae_to_ldm(pipe)}
    for key, value in pipe.text_encoder.state_dict().items():  # the original CLIP names
        state[
            "cond_stage_model.transformer." + ("" if key.startswith("text_model.") else "text_model.") + key
        ] = value
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path
