"""Metrics: FID/KID maths, LPIPS with random weights, CLIP score, the oracle, tables and plots."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from retouch.errors import RetouchError
from retouch.metrics.clip_score import ClipScorer
from retouch.metrics.fid import fid_from_features, kid_from_features, load_inception
from retouch.metrics.lpips import LPIPS, load_lpips, lpips_distance
from retouch.metrics.oracle import oracle_accuracy, oracle_match
from retouch.metrics.report import plot_curves, plot_edit_panel, write_tables
from retouch.metrics.weights import MissingWeights
from retouch.train.clip import ClipTrainConfig, save_untrained_clip
from retouch.worlds import shapes64

TINY_CLIP = ClipTrainConfig(vision_hidden=32, vision_layers=1, vision_heads=2, text_hidden=32, text_layers=1,
                            text_heads=2, projection_dim=16)  # fmt: skip


def samples_with(mean: np.ndarray, cov: np.ndarray, n: int = 50, seed: int = 0) -> np.ndarray:
    """(n, dim) samples whose sample mean and (unbiased) sample covariance are exactly ``mean``, ``cov``."""
    z = np.random.default_rng(seed).normal(size=(n, len(mean)))
    z -= z.mean(axis=0)
    white = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample covariance: identity
    return white @ np.linalg.cholesky(cov).T + mean


def test_fid_of_known_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    # diagonal covariances: ||mu1 - mu2||^2 + sum (sqrt(var1) - sqrt(var2))^2 = 5 + (4 + 1 + 0)
    a, b = samples_with(mu1, np.diag(var1)), samples_with(mu2, np.diag(var2), seed=1)
    assert fid_from_features(a, b) == pytest.approx(10.0, abs=1e-9)
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]  # same Gaussians, rotated
    assert fid_from_features(a @ rotation.T, b @ rotation.T) == pytest.approx(10.0, abs=1e-6)


def test_fid_from_samples():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4000, 4))
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = rng.normal(size=(4000, 4)) + np.array([2.0, 0.0, 0.0, 0.0])
    assert fid_from_features(a, shifted) == pytest.approx(4.0, abs=0.25)  # ||mu||^2, same covariance
    wider = rng.normal(size=(4000, 4)) * 3.0
    assert fid_from_features(a, wider) == pytest.approx(4 * (3 - 1) ** 2, abs=0.8)
    with pytest.raises(RetouchError, match="at least 2"):
        fid_from_features(a[:1], a)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 with the cubic polynomial kernel, written out pair by pair."""
    d, m = x.shape[1], x.shape[0]
    k = lambda u, v: (u @ v / d + 1) ** 3  # noqa: E731
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return kxx + kyy - 2 * kxy


def test_kid():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(12, 3)) + 0.5
    # one subset of the whole set is a permutation of it: exactly the unbiased estimate
    assert kid_from_features(x, y, num_subsets=1, subset_size=12) == pytest.approx(_mmd2_unbiased(x, y), rel=1e-9)
    same = rng.normal(size=(500, 8))
    other_same = rng.normal(size=(500, 8))
    far = rng.normal(size=(500, 8)) + 1.0
    near_zero = kid_from_features(same, other_same, num_subsets=20, subset_size=200)
    assert abs(near_zero) < 0.02
    assert kid_from_features(same, far, num_subsets=20, subset_size=200) > 0.5


def _random_lpips_file(path, seed: int = 0) -> LPIPS:
    model = LPIPS()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for p in model.parameters():
            p.data = torch.rand_like(p) * 0.1  # linear heads must be non-negative, as the trained ones are
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model


def test_lpips_with_random_weights(tmp_path):
    _random_lpips_file(tmp_path / "lpips.safetensors")
    model = load_lpips(tmp_path / "lpips.safetensors")
    rng = np.random.default_rng(3)
    a = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    c = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    assert lpips_distance(model, a, a) == 0.0
    near, far = lpips_distance(model, a, b), lpips_distance(model, a, c)
    assert 0 < near < far
    assert lpips_distance(model, b, a) == pytest.approx(near, rel=1e-5)

    # the same weights under torchvision's and the lpips package's key names load to the same network
    state = model.state_dict()
    slices = {1: 0, 2: 3, 3: 6, 4: 8, 5: 10}
    torchvision_style = {f"features.{i}.{kind}": state[f"net.slice{k}.{i}.{kind}"]
                         for k, i in slices.items() for kind in ("weight", "bias")}  # fmt: skip
    linear_heads = {f"lins.{k}.model.1.weight": state[f"lin{k}.model.1.weight"] for k in range(5)}
    torch.save(torchvision_style, tmp_path / "alexnet.pth")
    torch.save(linear_heads, tmp_path / "alex.pth")
    split = load_lpips([tmp_path / "alexnet.pth", tmp_path / "alex.pth"])
    assert lpips_distance(split, a, b) == pytest.approx(near, rel=1e-6)


def test_missing_lpips_and_inception_say_what_file_is_needed(tmp_path, monkeypatch):
    monkeypatch.setenv("RETOUCH_METRICS_DIR", str(tmp_path / "metrics"))
    with pytest.raises(MissingWeights, match=r"lpips_alex\.safetensors.*--lpips-weights"):
        load_lpips()
    with pytest.raises(MissingWeights, match=r"inception-2015-12-05\.pt.*--inception"):
        load_inception()
    with pytest.raises(MissingWeights, match="not found"):
        load_lpips(tmp_path / "nope.pth")
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "partial.pth")
    with pytest.raises(RetouchError, match="lack"):
        load_lpips(tmp_path / "partial.pth")


def test_inception_torchscript_features(tmp_path):
    class Features(torch.nn.Module):  # stands in for NVIDIA's TorchScript Inception: same call
        def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            x = images.float() / 255.0
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    torch.jit.script(Features()).save(str(tmp_path / "inception.pt"))
    features = load_inception(tmp_path / "inception.pt")
    pictures = [np.full((16, 16, 3), v, dtype=np.uint8) for v in (0, 51, 255)]
    out = features(pictures)
    assert out.shape == (3, 6)
    assert out[1, :3] == pytest.approx([0.2, 0.2, 0.2])


def test_clip_score_with_a_tiny_random_clip(tmp_path):
    folder = save_untrained_clip(tmp_path / "clip", TINY_CLIP)
    scorer = ClipScorer.load(folder)
    rng = np.random.default_rng(4)
    scenes = [shapes64.sample_scene(rng) for _ in range(3)]
    pictures = [s.render() for s in scenes]
    captions = [s.caption() for s in scenes]
    scores = scorer.score(pictures, captions)
    assert len(scores) == 3 and all(-1 <= s <= 1 for s in scores)
    # the same numbers straight from the model: cosine of the projected embeddings
    model, processor = scorer.model, scorer.processor
    with torch.no_grad():
        inputs = processor(images=[Image.fromarray(p) for p in pictures], return_tensors="pt")
        image = model.get_image_features(**inputs)
        text = model.get_text_features(**processor(text=captions, return_tensors="pt", padding=True))
    image, text = (x.pooler_output if hasattr(x, "pooler_output") else x for x in (image, text))
    expected = torch.nn.functional.cosine_similarity(image, text).tolist()
    assert scores == pytest.approx(expected, abs=1e-5)
    assert scorer.similarity(pictures, captions).shape == (3, 3)
    with pytest.raises(MissingWeights, match="--clip FOLDER"):
        ClipScorer.load(tmp_path / "missing-clip")


def test_oracle_wrapper():
    scene = shapes64.Scene("blue", "red", "circle", "large", 10, 12)
    picture = scene.render()
    fields = ("shape", "color", "background", "size", "style", "all")
    assert oracle_match(picture, scene.caption()) == dict.fromkeys(fields, True)
    wrong = oracle_match(picture, "a large green circle on a blue background")
    assert wrong["color"] is False and wrong["all"] is False and wrong["shape"] is True
    assert oracle_match(picture, "a cat") is None
    assert oracle_match(picture[:32], scene.caption()) is None
    captions = [scene.caption(), "a large green circle on a blue background", "a cat"]  # the cat is not scored
    accuracy = oracle_accuracy([picture, picture, picture], captions)
    assert accuracy == {"shape": 1.0, "color": 0.5, "background": 1.0, "size": 1.0, "style": 1.0, "all": 0.5, "n": 2}


def test_tables_in_three_formats(tmp_path):
    rows = [{"file": "a.png", "psnr": 31.25, "identical": False}, {"file": "b|c.png", "psnr": math.inf, "ssim": 0.9}]
    paths = write_tables(rows, tmp_path, "metrics", summary={"fid": 1.5, "kid": math.nan}, notes=["LPIPS skipped"])
    assert set(paths) == {"md", "csv", "json"}
    markdown = paths["md"].read_text()
    assert "| file | psnr | identical | ssim |" in markdown and "| a.png | 31.25 | no | - |" in markdown
    assert "b\\|c.png" in markdown and "- LPIPS skipped" in markdown
    table = list(csv.DictReader(paths["csv"].open()))
    assert table[0] == {"file": "a.png", "psnr": "31.25", "identical": "False", "ssim": ""}
    data = json.loads(paths["json"].read_text())
    assert data["rows"][1]["psnr"] is None and data["summary"] == {"fid": 1.5, "kid": None}


def test_plots_are_written(tmp_path):
    x = [0.0, 0.5, 1.0]
    curves = plot_curves(x, {"CLIP score": [0.2, 0.25, 0.3], "1 - LPIPS": [0.9, None, 0.6]}, tmp_path / "c.png",
                         "eta", "sweep", mark_x=0.5)  # fmt: skip
    picture = Image.fromarray(shapes64.Scene("blue", "red", "circle", "large", 10, 12).render())
    panel = plot_edit_panel(picture, picture, [(f"eta {v}", picture) for v in x], x, {"score": [1, 2, 3]},
                            tmp_path / "p.png", "eta", mark_x=1.0)  # fmt: skip
    for path in (curves, panel):
        assert path.stat().st_size > 10_000
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 300


def test_torchmetrics_clip_score_matches_ours_on_the_bundled_clip():
    """torchmetrics' clip_score on the bundled shapes-64 CLIP: 100 x the mean of our per-pair cosines."""
    scorer = ClipScorer.load(None)
    rng = np.random.default_rng(0)
    scenes = [shapes64.sample_scene(rng) for _ in range(4)]
    pictures, captions = [s.render() for s in scenes], [s.caption() for s in scenes]
    ours = scorer.score(pictures, captions)
    assert min(ours) > 0  # torchmetrics clips at 0: the figures agree where the cosines are positive
    assert scorer.torchmetrics_score(pictures, captions) / 100 == pytest.approx(float(np.mean(ours)), abs=1e-4)
    for picture, caption, cosine in zip(pictures, captions, ours, strict=True):
        assert scorer.torchmetrics_score([picture], [caption]) / 100 == pytest.approx(cosine, abs=1e-4)
