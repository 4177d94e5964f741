"""Masked PSNR/SSIM, FID and KID, now computed by torchmetrics, give the figures of the
hand-written numpy code they replaced.

``OLD`` holds what the hand-written code returned on these inputs (recorded before the switch,
to every digit repr prints). The new code may differ in the last bits (a convolution instead of
an integral image, eigenvalues instead of ``scipy.linalg.sqrtm``), never more than ``REL``
(``REL_PSNR`` and ``REL_SINGULAR`` where said).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from retouch.metrics.fid import fid_from_features, kid_from_features
from retouch.metrics.masked import masked_metrics, masked_psnr, masked_ssim

REL = 1e-9  # the figures agree to nine significant digits
REL_PSNR = 1e-7  # torchmetrics turns nats into decibels with a float32 factor (10 / ln 10)
REL_SINGULAR = 1e-8  # eigenvalues of a singular S1 S2 against scipy's sqrtm of it
OLD = {
    "psnr_inside": 25.10406779292943,
    "psnr_outside": 25.40451776824373,
    "ssim_inside": 0.9816896412400358,
    "ssim_outside": 0.9841050010853206,
    "ssim_gray": 0.98231189058666,
    "ssim_3x2": 0.9519651005784713,  # smaller than the window's radius: edges repeated, not reflected
    "fid": 5.31608083437505,
    "fid_fewer_samples_than_dims": 29.15964156352672,  # singular covariances
    "kid": 1.508711967854173,
    "kid_default_subsets": 1.6048278426265035,
}


@pytest.fixture(scope="module")
def pictures() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(24, 20, 3) uint8 noise, a noisier copy identical in the top 8 rows, and a (24, 20) mask."""
    rng = np.random.default_rng(20)
    a = (rng.random((24, 20, 3)) * 255).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    b[:8] = a[:8]
    mask = np.zeros((24, 20), dtype=bool)
    mask[5:15, 4:12] = True
    return a, b, mask


@pytest.fixture(scope="module")
def features() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(21)
    return {
        "x": rng.normal(size=(60, 8)),
        "y": rng.normal(size=(50, 8)) * 1.5 + 0.3,
        "few_x": rng.normal(size=(20, 32)),
        "few_y": rng.normal(size=(24, 32)) + 0.2,
    }


def test_masked_psnr_matches_the_old_figures(pictures) -> None:
    a, b, mask = pictures
    assert masked_psnr(a, b, mask) == pytest.approx(OLD["psnr_inside"], rel=REL_PSNR)
    assert masked_psnr(a, b, ~mask) == pytest.approx(OLD["psnr_outside"], rel=REL_PSNR)
    assert masked_psnr(a, a, mask) == math.inf
    assert math.isnan(masked_psnr(a, b, np.zeros_like(mask)))


def test_masked_ssim_matches_the_old_figures(pictures) -> None:
    a, b, mask = pictures
    assert masked_ssim(a, b, mask) == pytest.approx(OLD["ssim_inside"], rel=REL)
    assert masked_ssim(a, b, ~mask) == pytest.approx(OLD["ssim_outside"], rel=REL)
    assert masked_ssim(a[..., 0], b[..., 0], mask) == pytest.approx(OLD["ssim_gray"], rel=REL)
    small = np.ones((3, 2), dtype=bool)
    assert masked_ssim(a[10:13, :2], b[10:13, :2], small) == pytest.approx(OLD["ssim_3x2"], rel=REL)
    assert masked_ssim(a, a, mask) == pytest.approx(1.0, rel=REL)
    assert math.isnan(masked_ssim(a, b, np.zeros_like(mask)))


def test_masked_metrics_report_the_same_parts(pictures) -> None:
    a, b, mask = pictures
    report = masked_metrics(a, b, mask)
    assert report["inside"] == {
        "psnr": pytest.approx(OLD["psnr_inside"], rel=REL_PSNR),
        "ssim": pytest.approx(OLD["ssim_inside"], rel=REL),
        "pixels": int(mask.sum()),
    }
    assert report["outside"]["pixels"] == (~mask).sum()


def test_fid_matches_the_old_figures(features) -> None:
    assert fid_from_features(features["x"], features["y"]) == pytest.approx(OLD["fid"], rel=REL)
    few = fid_from_features(features["few_x"], features["few_y"])
    assert few == pytest.approx(OLD["fid_fewer_samples_than_dims"], rel=REL_SINGULAR)


def test_kid_matches_the_old_figures(features) -> None:
    x, y = features["x"], features["y"]
    assert kid_from_features(x, y, num_subsets=10, subset_size=30) == pytest.approx(OLD["kid"], rel=REL)
    assert kid_from_features(x, y) == pytest.approx(OLD["kid_default_subsets"], rel=REL)
