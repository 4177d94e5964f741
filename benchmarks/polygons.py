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

