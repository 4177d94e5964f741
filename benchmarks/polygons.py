"""Random polygon scenes for the VAE experiments of issue 16: a plain background and one filled
polygon of 3-12 vertices at random angles and radii (never the spec's star), drawn at 4x and
box-downsampled as the shapes-64 world draws its own shapes."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from retouch.worlds import shapes64 as w

PALETTE = np.array([w.PALETTE[c] for c in w.COLORS], dtype=np.uint8)


def polygon_scene(rng: np.random.Generator) -> np.ndarray:
    """One (64, 64, 3) uint8 picture: a random polygon of a world size and two palette colours."""
    bg, fg = rng.choice(len(PALETTE), 2, replace=False)
    side = int(rng.choice([w.SIZES["small"], w.SIZES["large"]]))
    x0, y0 = rng.integers(0, w.CANVAS - side + 1, 2)
    n = int(rng.integers(3, 13))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.3, 1.0, n) * side / 2
    cx, cy = (x0 + side / 2) * 4, (y0 + side / 2) * 4
    points = [(cx + 4 * r * np.cos(a), cy + 4 * r * np.sin(a)) for a, r in zip(angles, radii, strict=True)]
    image = Image.new("RGB", (256, 256), tuple(int(v) for v in PALETTE[bg]))
    ImageDraw.Draw(image).polygon(points, fill=tuple(int(v) for v in PALETTE[fg]))
    return np.asarray(image.resize((64, 64), Image.BOX))


def read_back(roundtrip, n: int = 100, seed: int = 2026) -> dict[str, dict[str, float]]:
    """Per shape (training and reserved), how often the oracle (reserved shapes among its
    candidates) reads ``n`` plain scenes back after ``roundtrip`` ((1, 3, 64, 64) in [-1, 1] ->
    the same), overall and per size."""
    import torch

    rng, out = np.random.default_rng(seed), {}
    for shape in (*w.SHAPES, *w.RESERVED_SHAPES):
        hits: dict[str, list[bool]] = {"small": [], "large": []}
        for _ in range(n):
            scene = w.sample_scene(rng, shapes=(shape,), style="plain")
            x = torch.from_numpy(scene.render()).permute(2, 0, 1)[None].float() / 127.5 - 1
            image = ((roundtrip(x)[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
            hits[scene.size].append(w.read_scene(image, reserved=True).shape == shape)
        out[shape] = {"read": round(float(np.mean(hits["small"] + hits["large"])), 3),
                      **{size: round(float(np.mean(h)), 3) for size, h in hits.items()}}
    return out
