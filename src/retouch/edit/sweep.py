"""SDEdit at several strengths, scored for faithfulness and for the edit: the trade-off curve of
``retouch evaluate --sdedit-sweep`` (SDEdit, Meng et al. 2022: more noise, more edit, less
faithfulness to the input).

It runs edits, so it lives in ``edit`` and imports ``metrics`` (which never imports ``edit``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from retouch.edit.api import edit
from retouch.io.images import load_image
from retouch.metrics.evaluate import Evaluation, Scorers, reference_metrics, sweep_series
from retouch.metrics.oracle import oracle_match
from retouch.metrics.report import Curves
from retouch.models.loading import LoadedModel

SWEEP_SERIES = [
    ("psnr", "faithful: PSNR, dB"),
    ("1-lpips", "faithful: 1 - LPIPS"),
    ("clip_score", "edit: CLIP score (target)"),
    ("oracle_target", "edit: oracle reads target"),
]


def sdedit_sweep(
    model: LoadedModel,
    image: str | os.PathLike[str],
    source: str,
    target: str,
    strengths: Sequence[float],
    scorers: Scorers,
    seed: int = 0,
    steps: int = 25,
) -> Evaluation:
    """SDEdit (``edit(..., method="sdedit")``) at each strength: faithfulness to the input (PSNR,
    SSIM, 1 - LPIPS) and the edit (CLIP score to the target, its margin over the source caption,
    and on canonical shapes-64 captions whether the oracle reads the target). Its ``save`` writes
    each strength's picture as ``sdedit_S.SS.png``, the tables and ``sdedit_strength.png``."""
    pixels = np.asarray(load_image(image))
    rows, pictures = [], {}
    for strength in strengths:
        result = edit(
            model, image, source, target, method="sdedit", strength=float(strength), seed=seed, steps=steps
        )
        row = {"strength": float(strength), **score_edit(np.asarray(result.image), pixels, source, target, scorers)}
        rows.append(row)
        pictures[f"sdedit_{row['strength']:.2f}.png"] = (result.image, result.recipe)
    curves = Curves(
        x=list(strengths),
        series=sweep_series(rows, SWEEP_SERIES),
        file_name="sdedit_strength.png",
        xlabel="strength",
        title=f"SDEdit: {source} -> {target}",
    )
    counts = {"strengths": len(rows)}
    return Evaluation(rows, {}, list(scorers.notes), "sdedit_sweep", counts, curves, pictures)


def score_edit(
    picture: np.ndarray, source_pixels: np.ndarray, source: str, target: str, scorers: Scorers
) -> dict[str, Any]:
    """One edited picture's faithfulness to its input and how well it shows ``target``."""
    row = reference_metrics(picture, source_pixels, None, scorers)
    row["1-lpips"] = 1.0 - row["lpips"] if "lpips" in row else None
    if scorers.clip is not None:
        similarity = scorers.clip.similarity([picture], [target, source])[0]
        row["clip_score"], row["clip_margin"] = float(similarity[0]), float(similarity[0] - similarity[1])
    if (match := oracle_match(picture, target)) is not None:
        row["oracle_target"] = match["all"]
    return row
