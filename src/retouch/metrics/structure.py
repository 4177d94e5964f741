"""Structure distance (Tumanyan et al. 2022, "Splicing ViT Features for Semantic Appearance
Transfer"): how far two pictures' layouts differ, as the mean squared difference of the
self-similarity of their DINO ViT keys. PIE-Bench (Ju et al. 2023) reports it as "Structure Distance".

Computed as PIE-Bench's ``evaluation/matrics_calculator.py`` computes it (``MetricsCalculator.
calculate_structure_distance`` -> ``LossG.calculate_global_ssim_loss``), step by step:

- the picture enters as float **0..255** pixels (PIE-Bench does not divide by 255 there, unlike its
  other metrics), resized so its short side is 224 (long side at most 480; bilinear without
  antialiasing, as torchvision 0.13's ``Resize`` on tensors, the version PIE-Bench pins), then
  normalised with ImageNet's mean and std;
- the keys of block 11 (the last of DINO ViT-B/8's 12; ``layer_num=11``), all heads concatenated,
  every token including CLS;
- their cosine self-similarity, a (tokens x tokens) matrix, the norms' product clamped at 1e-8;
- the distance is ``F.mse_loss`` of the two matrices: the mean over all entries.

PIE-Bench loads ``dino_vitb8`` from torch.hub; here any transformers ``ViTModel`` folder serves
(``facebook/dino-vitb8`` is the same network), so figures match PIE-Bench's only with that model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from retouch.metrics.weights import MissingWeights

PIE_LAYER = 11  # PIE-Bench's layer_num
SHORT_SIDE, MAX_SIDE = 224, 480  # torchvision Resize(224, max_size=480)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def missing_message(source: object) -> str:
    return (
        f"structure distance needs a DINO ViT: cannot load a transformers ViTModel from {source}. Pass "
        "--dino FOLDER (ViTModel.save_pretrained of facebook/dino-vitb8, PIE-Bench's network, downloaded "
        "on another machine)"
    )


def load_dino(source: str | os.PathLike[str], device: str | torch.device = "cpu") -> torch.nn.Module:
    """A transformers ``ViTModel`` from a local folder.

    Raises:
        MissingWeights: no such folder, or no ViT in it.
    """
    from transformers import ViTModel

    path = Path(source).expanduser()
    if not (path / "config.json").is_file():
        raise MissingWeights(missing_message(source))
    try:
        model = ViTModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
    except (OSError, ValueError) as e:
        raise MissingWeights(f"{missing_message(source)} ({e})") from e
    return model.to(device).eval()


def resized_size(height: int, width: int) -> tuple[int, int]:
    """torchvision's ``Resize(224, max_size=480)`` output size (``_compute_resized_output_size``)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = SHORT_SIDE, int(SHORT_SIDE * long / short)
    if new_long > MAX_SIDE:
        new_short, new_long = int(MAX_SIDE * new_short / new_long), MAX_SIDE
    return (new_long, new_short) if width <= height else (new_short, new_long)


def dino_input(picture: np.ndarray) -> torch.Tensor:
    """(H, W, 3) 0..255 -> (1, 3, h, w) as PIE-Bench's ``global_transform`` leaves it."""
    x = torch.from_numpy(np.asarray(picture, dtype=np.float32)).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=resized_size(*x.shape[2:]), mode="bilinear", align_corners=False)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return (x - mean) / std


def key_projection(model: torch.nn.Module, layer: int | None = None) -> torch.nn.Module:
    """The key ``Linear`` of block ``layer`` (default: PIE-Bench's 11, or the last block of a ViT
    with fewer), under transformers 5's names (``layers[i].attention.k_proj``) or 4's
    (``encoder.layer[i].attention.attention.key``)."""
    blocks = model.layers if hasattr(model, "layers") else model.encoder.layer
    block = blocks[min(PIE_LAYER, len(blocks) - 1) if layer is None else layer]
    attention = block.attention
    return attention.k_proj if hasattr(attention, "k_proj") else attention.attention.key


@torch.no_grad()
def keys_self_similarity(model: torch.nn.Module, picture: np.ndarray, layer: int | None = None) -> torch.Tensor:
    """(tokens, tokens) cosine similarity of the keys of block ``layer``, heads concatenated."""
    captured: list[torch.Tensor] = []
    hook = key_projection(model, layer).register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        model(pixel_values=dino_input(picture).to(next(model.parameters()).device), interpolate_pos_encoding=True)
    finally:
        hook.remove()
    keys = captured[0][0].float()  # (tokens, heads * dim)
    norms = keys.norm(dim=-1, keepdim=True)
    return (keys @ keys.T) / torch.clamp(norms @ norms.T, min=1e-8)


def structure_distance(model: torch.nn.Module, a: np.ndarray, b: np.ndarray, layer: int | None = None) -> float:
    """PIE-Bench's structure distance between two (H, W, 3) pictures of one size (0 = same layout)."""
    if a.shape != b.shape:
        raise ValueError(f"pictures differ in shape: {a.shape} vs {b.shape}")
    return float(F.mse_loss(keys_self_similarity(model, a, layer), keys_self_similarity(model, b, layer)))
