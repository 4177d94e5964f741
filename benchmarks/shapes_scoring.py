"""What every shapes-64 benchmark shares: dev/test splits, the object-in-place check, and how often
a round trip (a VAE's, say) lets each shape through.

Splits: settings are tuned on ``dev`` and figures are reported on ``test``. Each benchmark draws
its pairs and seeds from one base seed; the two splits' base seeds are far enough apart that their
pairs and sampling seeds never meet (a benchmark of n items uses base .. base + n, or
base * 1000 .. base * 1000 + n where it multiplies).

In place: an edit keeps every field its captions do not name, position included. The oracle reads
the object's bounding box from the output and from the rendered target scene; the edit counts as
in place when the two boxes' centres lie within ``PLACE_TOLERANCE_PX`` of each other.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import numpy as np
import torch

from retouch.worlds import shapes64

SPLIT_SEEDS: dict[str, dict[str, int]] = {
    "edit": {"dev": 0, "test": 1_000_000},
    "imagic": {"dev": 0, "test": 1_000_000},
    "instruct": {"dev": 0, "test": 1_000_000},
    "steer": {"dev": 2000, "test": 5000},
}
PLACE_TOLERANCE_PX = 4.0


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", choices=("dev", "test"), default="dev",
                        help="dev: the pairs settings are tuned on; test: held-out pairs to report")
    parser.add_argument("--seed", type=int, default=None, help="override the split's base seed")


def base_seed(args: argparse.Namespace, benchmark: str) -> int:
    """``--seed`` when given, else the split's base seed for ``benchmark``."""
    return SPLIT_SEEDS[benchmark][args.split] if args.seed is None else args.seed


def object_centre(picture: np.ndarray) -> tuple[float, float] | None:
    """The centre (x, y) of the object's bounding box as the oracle reads it; None without object."""
    bbox = shapes64.read_scene(picture).bbox
    if bbox is None:
        return None
    return (bbox[0] + bbox[2] + 1) / 2, (bbox[1] + bbox[3] + 1) / 2


def centre_shift(output: np.ndarray, target: shapes64.Scene) -> float:
    """Distance in pixels between the object's centre in ``output`` and in the rendered target
    (inf when either picture shows no object)."""
    got, want = object_centre(output), object_centre(target.render())
    if got is None or want is None:
        return math.inf
    return math.dist(got, want)


def in_place(output: np.ndarray, target: shapes64.Scene) -> bool:
    return centre_shift(output, target) <= PLACE_TOLERANCE_PX


def read_back(
    roundtrip: Callable[[torch.Tensor], torch.Tensor], n: int = 100, seed: int = 2026
) -> dict[str, dict[str, float]]:
    """Per shape (training and reserved), how often the oracle (reserved shapes among its
    candidates) reads ``n`` plain scenes back after ``roundtrip`` ((1, 3, 64, 64) in [-1, 1] ->
    the same), overall and per size."""
    rng, out = np.random.default_rng(seed), {}
    for shape in (*shapes64.SHAPES, *shapes64.RESERVED_SHAPES):
        hits: dict[str, list[bool]] = {"small": [], "large": []}
        for _ in range(n):
            scene = shapes64.sample_scene(rng, shapes=(shape,), style="plain")
            x = torch.from_numpy(scene.render()).permute(2, 0, 1)[None].float() / 127.5 - 1
            image = ((roundtrip(x)[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
            hits[scene.size].append(shapes64.read_scene(image, reserved=True).shape == shape)
        out[shape] = {"read": round(float(np.mean(hits["small"] + hits["large"])), 4),
                      **{size: round(float(np.mean(h)), 4) for size, h in hits.items() if h}}
    return out
