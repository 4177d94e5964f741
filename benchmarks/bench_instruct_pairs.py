"""How good are the picture pairs of ``retouch train instruct --data generated``, and what does the
CLIP filter keep? (``retouch.steer.pairs``, the InstructPix2Pix paper's data route on shapes-64.)

    python benchmarks/bench_instruct_pairs.py --batches 6 --out outputs/instruct_pairs.json

Draws ``--batches`` batches of 32 caption pairs from the grammar with the bundled model (every
pair kept), and scores each pair with the oracle: right when both pictures read as their
captions and the object's box centre moves at most 4 px between them. Prints, per kind, the
share right and the median CLIP scores, then for a grid of (directional, image similarity)
thresholds the share of pairs kept and the share right among them. Never fails on figures.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retouch.steer.pairs import GeneratedSettings
from retouch.worlds import shapes64 as w
from retouch.worlds.shapes64_instructions import KINDS, generated_source

DIRECTIONAL = (-1.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
IMAGE_SIMILARITY = (0.0, 0.3, 0.5, 0.6, 0.7, 0.75)


def right(before: np.ndarray, after: np.ndarray, source: str, target: str) -> bool:
    """Both pictures read as their captions, and the object stays within 4 px."""
    read_a, read_b = w.read_scene(before), w.read_scene(after)
    for reading, caption in ((read_a, source), (read_b, target)):
        if any(reading.fields()[k] != v for k, v in w.parse_caption(caption).items()):
            return False
    if read_a.bbox is None or read_b.bbox is None:
        return False
    shift = (np.add(read_a.bbox[:2], read_a.bbox[2:]) - np.add(read_b.bbox[:2], read_b.bbox[2:])) / 2
    return bool(np.hypot(*shift) <= 4)


def draw_rows(batches: int, seed: int) -> list[dict[str, Any]]:
    source = generated_source()
    source.settings = GeneratedSettings(min_directional=-2.0, min_image_similarity=-2.0)
    rng, rows = np.random.default_rng(seed), []
    for _ in range(batches):
        replay = copy.deepcopy(rng)  # draw() samples the captions first: replay them to score
        triplets = [source.grammar.sample_captions(replay) for _ in range(source.settings.batch)]
        before, _, after, _ = source.draw(rng)
        start = len(source.stats.directional) - len(triplets)
        for i, (caption_a, _, caption_b) in enumerate(triplets):
            a, b = w.parse_caption(caption_a), w.parse_caption(caption_b)
            kind = next(k for k in ("background", "color", "shape", "size", "style") if a[k] != b[k])
            rows.append({
                "kind": kind, "right": right(before[i], after[i], caption_a, caption_b),
                "directional": source.stats.directional[start + i],
                "image_similarity": source.stats.image_similarity[start + i],
            })
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = np.array([r["right"] for r in rows])
    d = np.array([r["directional"] for r in rows])
    s = np.array([r["image_similarity"] for r in rows])
    kinds = {}
    for kind in KINDS:
        these = [r for r in rows if r["kind"] == kind]
        if these:
            kinds[kind] = {"n": len(these), "right": float(np.mean([r["right"] for r in these])),
                           "directional_median": float(np.median([r["directional"] for r in these])),
                           "image_similarity_median": float(np.median([r["image_similarity"] for r in these]))}
    grid = []
    for td in DIRECTIONAL:
        for ts in IMAGE_SIMILARITY:
            kept = (d >= td) & (s >= ts)
            grid.append({"directional": td, "image_similarity": ts, "kept": float(kept.mean()),
                         "right_among_kept": float(ok[kept].mean()) if kept.any() else None})
    return {"pairs": len(rows), "right": float(ok.mean()), "kinds": kinds, "grid": grid}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=6, help="batches of 32 caption pairs (default 6)")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    report = summarize(draw_rows(args.batches, args.seed))
    print(f"{report['pairs']} pairs, right (both read, object within 4 px): {report['right']:.1%}")
    for kind, row in report["kinds"].items():
        print(f"  {kind:10s} {row['n']:3d} right {row['right']:.1%}  directional {row['directional_median']:.2f}"
              f"  image similarity {row['image_similarity_median']:.2f}")
    for row in report["grid"]:
        right_kept = "-" if row["right_among_kept"] is None else f"{row['right_among_kept']:.1%}"
        print(f"  directional >= {row['directional']:5.2f}, image similarity >= {row['image_similarity']:.2f}: "
              f"kept {row['kept']:.1%}, right {right_kept}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
