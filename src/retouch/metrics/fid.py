"""FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) from image features.

The maths are plain functions of feature arrays. The features come from a local network:
- ``--inception PATH``: the TorchScript Inception-v3 that StyleGAN2-ADA, StyleGAN3 and clean-fid use
  (``inception-2015-12-05.pt``; called as ``net(uint8 NCHW, return_features=True)`` -> (n, 2048)),
  loaded with ``torch.jit.load`` (no torchvision, no download);
- or any other feature extractor, e.g. a CLIP image tower (``ClipScorer.image_features``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from retouch.errors import RetouchError
from retouch.metrics.weights import MissingWeights, metrics_dir

INCEPTION_NAME = "inception-2015-12-05.pt"
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000

FeatureFn = Callable[[Sequence[np.ndarray]], np.ndarray]  # pictures (H, W, 3) uint8 -> (n, dim)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (dim,) and covariance (dim, dim) of (n, dim) features."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise RetouchError(f"FID needs at least 2 feature vectors per set, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians (Heusel et al.
    2017, eq. 6; Dowson and Landau 1982)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product: nudge the diagonals, as pytorch-fid does
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)  # numerical noise leaves tiny imaginary parts
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))


def kid_from_features(
    features1: np.ndarray,
    features2: np.ndarray,
    num_subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> float:
    """Unbiased MMD^2 with the kernel k(x, y) = (x.y / dim + 1)^3 (Binkowski et al. 2018, eq. 4),
    averaged over random subsets as StyleGAN2-ADA's ``kernel_inception_distance`` does."""
    x_all, y_all = np.asarray(features1, dtype=np.float64), np.asarray(features2, dtype=np.float64)
    dim = x_all.shape[1]
    m = min(x_all.shape[0], y_all.shape[0], subset_size)
    if m < 2:
        raise RetouchError("KID needs at least 2 feature vectors per set")
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = x_all[rng.choice(x_all.shape[0], m, replace=False)]
        y = y_all[rng.choice(y_all.shape[0], m, replace=False)]
        a = (x @ x.T / dim + 1) ** 3 + (y @ y.T / dim + 1) ** 3
        b = (x @ y.T / dim + 1) ** 3
        total += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(total / num_subsets / m)


def missing_message(folder: Path | None = None) -> str:
    folder = folder or metrics_dir()
    return (
        f"FID and KID need Inception-v3 features: put NVIDIA's TorchScript {INCEPTION_NAME} (the one "
        f"StyleGAN2-ADA and clean-fid download) at {folder / INCEPTION_NAME}, or pass --inception PATH"
    )


def load_inception(path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu") -> FeatureFn:
    """A feature function from a TorchScript Inception file (default: the metrics folder's)."""
    path = Path(path).expanduser() if path is not None else metrics_dir() / INCEPTION_NAME
    if not path.is_file():
        raise MissingWeights(f"no Inception network at {path}. " + missing_message())
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format this file comes in
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location=device).eval()
    except RuntimeError as e:
        raise RetouchError(f"{path} is not a TorchScript file ({e}). " + missing_message()) from e

    @torch.no_grad()
    def features(pictures: Sequence[np.ndarray]) -> np.ndarray:
        chunks = []
        for start in range(0, len(pictures), 32):
            batch = np.stack([np.asarray(p, dtype=np.uint8) for p in pictures[start : start + 32]])
            images = torch.from_numpy(batch).permute(0, 3, 1, 2).to(device)  # (n, 3, H, W) uint8
            chunks.append(net(images, return_features=True).float().cpu().numpy())
        return np.concatenate(chunks).reshape(len(pictures), -1)

    return features
