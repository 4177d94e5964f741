"""PIE-Bench's edit metrics (Ju et al. 2023, "Direct Inversion: Boosting Diffusion-based Editing
with 3 Lines of Code"), defined as that benchmark's code defines them: ``evaluation/evaluate.py``
and ``evaluation/matrics_calculator.py`` of github.com/cure-lab/PnPInversion. Each row carries the
column names of that code's CSV, so figures can be set beside the paper's table.

What that code does, and this module does the same:

- **mask** (``mask_decode``): 1 = edited. The one-pixel frame of the picture is set to 1 ("to avoid
  annotation errors in boundary"), so background figures never count it (``border=True``).
- **background** ``psnr/lpips/mse/ssim_unedit_part``: both pictures scaled to [0, 1] (float32) and
  *multiplied* by ``1 - mask``, so the edited region is black in both and still counted in every
  mean; ``nan`` when the mask covers everything.

  - PSNR: torchmetrics ``PeakSignalNoiseRatio(data_range=1.0)``, one mean squared error over the
    whole (3, H, W) picture; ``inf`` for identical backgrounds.
  - LPIPS: torchmetrics ``LearnedPerceptualImagePatchSimilarity(net_type="squeeze")`` on ``2x - 1``
    (the SqueezeNet variant, ``retouch.metrics.lpips.LPIPS("squeeze")``).
  - MSE: torchmetrics ``MeanSquaredError`` on the [0, 1] pixels (the paper prints it x10^4).
  - SSIM: torchmetrics ``StructuralSimilarityIndexMeasure(data_range=1.0)``: 11x11 Gaussian window,
    sigma 1.5, k1 0.01, k2 0.03, averaged over the valid (unpadded) picture.

- **CLIP** ``clip_similarity_*``: torchmetrics ``CLIPScore`` (``100 * max(cos, 0)``, PIE-Bench on
  ``openai/clip-vit-large-patch14``) of the uint8 picture and the prompt with PIE-Bench's ``[ ]``
  edit markers removed: the edited picture whole (``target_image``), the edited picture times the
  mask, black outside (``target_image_edit_part``), and the source picture to the source prompt
  (``source_image``) when one is given.
- **structure distance** of the whole pictures (no mask): ``retouch.metrics.structure``.

The paper's table scales some columns: ``PAPER_COLUMNS`` names and scales them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchmetrics.functional import mean_squared_error
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from retouch.metrics.clip_score import ClipScorer
from retouch.metrics.lpips import LPIPS
from retouch.metrics.structure import structure_distance

BACKGROUND = ("psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part")
CLIP = ("clip_similarity_source_image", "clip_similarity_target_image", "clip_similarity_target_image_edit_part")
COLUMNS = ("structure_distance", *BACKGROUND, *CLIP)  # PIE-Bench's evaluate.py defaults, in its order
# the paper's Table 1: (column, label, scale)
PAPER_COLUMNS = (
    ("structure_distance", "Structure Distance x10^3", 1e3),
    ("psnr_unedit_part", "PSNR", 1.0),
    ("lpips_unedit_part", "LPIPS x10^3", 1e3),
    ("mse_unedit_part", "MSE x10^4", 1e4),
    ("ssim_unedit_part", "SSIM x10^2", 1e2),
    ("clip_similarity_target_image", "CLIP Whole", 1.0),
    ("clip_similarity_target_image_edit_part", "CLIP Edited", 1.0),
)


def pie_mask(mask: np.ndarray, border: bool = True) -> np.ndarray:
    """(H, W) float32, 1 = edited, from a bool or 0/1 mask; with ``border`` the one-pixel frame is
    set to 1, as PIE-Bench's ``mask_decode`` does."""
    out = (np.asarray(mask) > 0).astype(np.float32)
    if out.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {out.shape}")
    if border:
        out[0, :] = out[-1, :] = out[:, 0] = out[:, -1] = 1.0
    return out


def prompt_text(prompt: str) -> str:
    """A PIE-Bench prompt without its ``[ ]`` edit markers, as evaluate.py strips them."""
    return prompt.replace("[", "").replace("]", "")


def _kept(picture: np.ndarray, keep: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1], multiplied by ``keep`` (H, W)."""
    pixels = np.asarray(picture).astype(np.float32) / 255 * keep[..., None]
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()


@torch.no_grad()
def background_metrics(
    source: np.ndarray, edited: np.ndarray, mask: np.ndarray, lpips: LPIPS | None = None
) -> dict[str, float]:
    """``psnr/lpips/mse/ssim_unedit_part`` of two (H, W, 3) uint8 pictures and a ``pie_mask``
    (LPIPS only with a network)."""
    if source.shape != edited.shape or source.shape[:2] != mask.shape:
        raise ValueError(f"shapes differ: source {source.shape}, edited {edited.shape}, mask {mask.shape}")
    keep = 1.0 - mask
    if keep.sum() == 0:  # nothing kept: PIE-Bench writes "nan"
        return dict.fromkeys((n for n in BACKGROUND if lpips is not None or n != "lpips_unedit_part"), math.nan)
    a, b = _kept(source, keep), _kept(edited, keep)
    row = {
        "psnr_unedit_part": float(peak_signal_noise_ratio(a, b, data_range=1.0)),
        "mse_unedit_part": float(mean_squared_error(a, b)),
        "ssim_unedit_part": float(structural_similarity_index_measure(a, b, data_range=1.0)),
    }
    if lpips is not None:
        device = next(lpips.parameters()).device
        row["lpips_unedit_part"] = float(lpips(a.to(device) * 2 - 1, b.to(device) * 2 - 1)[0])
    return {name: row[name] for name in BACKGROUND if name in row}


def clip_similarities(
    clip: ClipScorer,
    source: np.ndarray,
    edited: np.ndarray,
    mask: np.ndarray,
    target_prompt: str,
    source_prompt: str | None = None,
) -> dict[str, float]:
    """``clip_similarity_*``: torchmetrics' CLIPScore (0..100) on ``clip``'s model."""
    row = {}
    if source_prompt is not None:
        row["clip_similarity_source_image"] = clip.torchmetrics_score([source], [prompt_text(source_prompt)])
    target = prompt_text(target_prompt)
    row["clip_similarity_target_image"] = clip.torchmetrics_score([edited], [target])
    if mask.sum() == 0:
        row["clip_similarity_target_image_edit_part"] = math.nan
    else:
        inside = np.uint8(np.asarray(edited) * mask[..., None])  # black outside the edit, as PIE-Bench
        row["clip_similarity_target_image_edit_part"] = clip.torchmetrics_score([inside], [target])
    return row


def pie_metrics(
    source: np.ndarray,
    edited: np.ndarray,
    mask: np.ndarray,
    target_prompt: str | None = None,
    source_prompt: str | None = None,
    *,
    clip: ClipScorer | None = None,
    lpips: LPIPS | None = None,
    dino: torch.nn.Module | None = None,
    border: bool = True,
) -> dict[str, Any]:
    """Every PIE-Bench column the given networks allow, for one edit: (H, W, 3) uint8 ``source`` and
    ``edited``, ``mask`` (H, W) True where edited. Columns are left out, not guessed, when their
    network (``clip``, ``lpips``, ``dino``) or prompt is missing."""
    mask = pie_mask(mask, border)
    row: dict[str, Any] = {}
    if dino is not None:
        row["structure_distance"] = structure_distance(dino, source, edited)
    row.update(background_metrics(source, edited, mask, lpips))
    if clip is not None and target_prompt is not None:
        row.update(clip_similarities(clip, source, edited, mask, target_prompt, source_prompt))
    return {name: row[name] for name in COLUMNS if name in row}


def paper_row(summary: dict[str, Any]) -> dict[str, float]:
    """The means in the paper's units and labels (``PAPER_COLUMNS``), for the columns present."""
    out = {}
    for column, label, scale in PAPER_COLUMNS:
        value = summary.get(column)
        if isinstance(value, int | float):
            out[label] = float(value) * scale
    return out
