"""FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) from image features.

The maths are torchmetrics' (``FrechetInceptionDistance`` fed the given features through an
identity extractor; ``poly_mmd`` on each KID subset), called on feature arrays. The features come
from a local network:
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
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import poly_mmd

from retouch.errors import RetouchError
from retouch.metrics.weights import MissingWeights, metrics_dir

INCEPTION_NAME = "inception-2015-12-05.pt"
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000

FeatureFn = Callable[[Sequence[np.ndarray]], np.ndarray]  # pictures (H, W, 3) uint8 -> (n, dim)


class GivenFeatures(torch.nn.Module):
    """An identity "extractor" of ``num_features`` features: torchmetrics' FID then takes
    features already computed (by ``load_inception`` or a CLIP image tower) instead of pictures."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between the Gaussians fitted to two
    sets of (n, dim) features (Heusel et al. 2017, eq. 6), computed by torchmetrics in float64."""
    sets = [torch.from_numpy(np.asarray(f, dtype=np.float64)) for f in (features1, features2)]
    if any(f.ndim != 2 or f.shape[0] < 2 for f in sets):
        shapes = [tuple(f.shape) for f in sets]
        raise RetouchError(f"FID needs at least 2 feature vectors per set, got shapes {shapes}")
    if sets[0].shape[1] != sets[1].shape[1]:
        raise RetouchError(f"FID needs features of one size, got {sets[0].shape[1]} and {sets[1].shape[1]}")
    metric = FrechetInceptionDistance(feature=GivenFeatures(sets[0].shape[1]))
    metric.update(sets[0], real=True)
    metric.update(sets[1], real=False)
    return float(metric.compute())


def kid_from_features(
    features1: np.ndarray,
    features2: np.ndarray,
    num_subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> float:
    """Unbiased MMD^2 with the kernel k(x, y) = (x.y / dim + 1)^3 (Binkowski et al. 2018, eq. 4),
    averaged over random subsets as StyleGAN2-ADA's ``kernel_inception_distance`` does. The
    subsets are drawn here (numpy, ``seed``) so the figure is reproducible; torchmetrics'
    ``poly_mmd`` computes each subset's MMD^2."""
    x_all, y_all = (torch.from_numpy(np.asarray(f, dtype=np.float64)) for f in (features1, features2))
    m = min(x_all.shape[0], y_all.shape[0], subset_size)
    if m < 2:
        raise RetouchError("KID needs at least 2 feature vectors per set")
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = x_all[rng.choice(x_all.shape[0], m, replace=False)]  # (m, dim)
        y = y_all[rng.choice(y_all.shape[0], m, replace=False)]
        total += float(poly_mmd(x, y))
    return total / num_subsets


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
