"""PSNR and SSIM restricted to a mask: how well an edit kept what it should keep.

No weights. torchmetrics computes both: PSNR over the masked pixels alone, and SSIM (Wang et al.
2004, eq. 13) with a 7x7 uniform window (as scikit-image's default) as a map over the whole
picture, which is then averaged over the masked pixels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray, max_value: float = 255.0) -> float:
    """PSNR in dB over the pixels where ``mask`` is True: ``inf`` when identical there, ``nan``
    when the mask is empty. ``a``, ``b``: (H, W) or (H, W, C); ``mask``: (H, W) bool."""
    a, b, mask = _check(a, b, mask)
    if not mask.any():
        return math.nan
    inside_a, inside_b = torch.from_numpy(a[mask]), torch.from_numpy(b[mask])  # (pixels, C) float64
    return float(peak_signal_noise_ratio(inside_a, inside_b, data_range=max_value))


def masked_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray, max_value: float = 255.0) -> float:
    """Mean SSIM over the pixels where ``mask`` is True (channels averaged); ``nan`` when empty."""
    a, b, mask = _check(a, b, mask)
    if not mask.any():
        return math.nan
    ssim = ssim_map(a, b, max_value)  # (H, W, C)
    return float(ssim.mean(axis=-1)[mask].mean())


def ssim_map(a: np.ndarray, b: np.ndarray, max_value: float = 255.0) -> np.ndarray:
    """SSIM at every pixel of (H, W, C) float64 pictures, from torchmetrics' full SSIM image.

    The pictures are padded here, by reflection (by repeating the edge on pictures too small to
    reflect, under 4 pixels a side), and torchmetrics' own padding is cropped off, so every
    window sees the same pixels on any picture size."""
    r = SSIM_WINDOW // 2
    mode = "reflect" if min(a.shape[:2]) > r else "edge"
    pad = ((r, r), (r, r), (0, 0))
    padded = [torch.from_numpy(np.pad(x, pad, mode=mode)).permute(2, 0, 1)[None] for x in (a, b)]  # (1, C, H, W)
    _, full = structural_similarity_index_measure(
        *padded,
        gaussian_kernel=False,
        kernel_size=SSIM_WINDOW,
        data_range=max_value,
        k1=SSIM_K1,
        k2=SSIM_K2,
        return_full_image=True,
    )
    h, w = a.shape[:2]
    return full[0, :, r : r + h, r : r + w].permute(1, 2, 0).numpy()


def masked_metrics(
    a: np.ndarray, b: np.ndarray, mask: np.ndarray, band: np.ndarray | None = None
) -> dict[str, dict[str, float | int]]:
    """PSNR and SSIM inside ``mask`` and outside it, with the pixel count of each part. With a
    ``band`` (the pixels a feathered composite blends, around the mask), a third part ``feather``
    holds those, and ``outside`` is what lies beyond both."""
    mask = np.asarray(mask, dtype=bool)
    band = np.zeros_like(mask) if band is None else np.asarray(band, dtype=bool) & ~mask
    parts = {"inside": mask, "outside": ~mask & ~band}
    if band.any():
        parts["feather"] = band
    a, b, _ = _check(a, b, mask)
    ssim = ssim_map(a, b).mean(axis=-1)  # one map for every part: the windows do not depend on the mask
    return {
        part: {"psnr": masked_psnr(a, b, m), "ssim": float(ssim[m].mean()) if m.any() else math.nan,
               "pixels": int(m.sum())}
        for part, m in parts.items()
    }


def _check(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != a.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match the images' {a.shape[:2]}")
    return a, b, mask
