"""PSNR and SSIM restricted to a mask: how well an edit kept what it should keep.

Pure numpy, no weights. SSIM is Wang et al. 2004 (eq. 13) with a 7x7 uniform window (as
scikit-image's default), computed over the whole picture and averaged over the masked pixels.
"""

from __future__ import annotations

import math

import numpy as np

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray, max_value: float = 255.0) -> float:
    """PSNR in dB over the pixels where ``mask`` is True: ``inf`` when identical there, ``nan``
    when the mask is empty. ``a``, ``b``: (H, W) or (H, W, C); ``mask``: (H, W) bool."""
    a, b, mask = _check(a, b, mask)
    if not mask.any():
        return math.nan
    mse = float(np.mean((a[mask] - b[mask]) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(max_value**2 / mse)


def masked_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray, max_value: float = 255.0) -> float:
    """Mean SSIM over the pixels where ``mask`` is True (channels averaged); ``nan`` when empty."""
    a, b, mask = _check(a, b, mask)
    if not mask.any():
        return math.nan
    c1, c2 = (SSIM_K1 * max_value) ** 2, (SSIM_K2 * max_value) ** 2
    mu_a, mu_b = _box(a), _box(b)
    var_a = _box(a * a) - mu_a**2
    var_b = _box(b * b) - mu_b**2
    cov = _box(a * b) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim.mean(axis=-1)[mask].mean())


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
    return {
        part: {"psnr": masked_psnr(a, b, m), "ssim": masked_ssim(a, b, m), "pixels": int(m.sum())}
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


def _box(x: np.ndarray, size: int = SSIM_WINDOW) -> np.ndarray:
    """Mean over a ``size`` x ``size`` window around each pixel of (H, W, C), edges reflected."""
    r = size // 2
    padded = np.pad(x, ((r, r), (r, r), (0, 0)), mode="reflect" if min(x.shape[:2]) > r else "edge")
    integral = np.pad(padded.cumsum(0).cumsum(1), ((1, 0), (1, 0), (0, 0)))  # integral image
    h, w = x.shape[:2]
    total = (
        integral[size : size + h, size : size + w]
        - integral[:h, size : size + w]
        - integral[size : size + h, :w]
        + integral[:h, :w]
    )
    return total / (size * size)
