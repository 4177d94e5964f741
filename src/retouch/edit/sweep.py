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
from retouch.edit.instruct import instruct
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


INSTRUCT_SERIES = [
    ("directional_similarity", "edit: CLIP directional similarity"),
    ("image_similarity", "faithful: CLIP image similarity"),
    ("oracle_target", "edit: oracle reads target"),
]


def instruct_sweep(
    model: LoadedModel,
    image: str | os.PathLike[str],
    instruction: str,
    image_guidance_scales: Sequence[float],
    scorers: Scorers,
    source: str | None = None,
    target: str | None = None,
    seed: int = 0,
    steps: int | None = None,
    guidance_scale: float | None = None,
) -> Evaluation:
    """InstructPix2Pix at each image guidance scale (text guidance fixed), the paper's figure:
    CLIP image similarity of output and input (faithfulness) and, given captions of the input
    (``source``) and of the wanted picture (``target``), CLIP directional similarity, the cosine
    between the change of the image embedding and the change of the caption embedding (the edit).
    Its ``save`` writes each scale's picture as ``instruct_S.SS.png``, the tables and
    ``instruct_image_guidance.png``."""
    pixels = np.asarray(load_image(image))
    rows, pictures = [], {}
    for scale in image_guidance_scales:
        result = instruct(
            model, image, instruction, image_guidance_scale=float(scale), seed=seed, steps=steps,
            guidance_scale=guidance_scale,
        )
        scores = clip_directions(np.asarray(result.image), pixels, source, target, scorers)
        row = {"image_guidance_scale": float(scale), **scores}
        rows.append(row)
        pictures[f"instruct_{row['image_guidance_scale']:.2f}.png"] = (result.image, result.recipe)
    curves = Curves(
        x=list(image_guidance_scales),
        series=sweep_series(rows, INSTRUCT_SERIES),
        file_name="instruct_image_guidance.png",
        xlabel="image guidance scale",
        title=f"InstructPix2Pix: {instruction}",
    )
    return Evaluation(rows, {}, list(scorers.notes), "instruct_sweep", {"scales": len(rows)}, curves, pictures)


def clip_directions(
    picture: np.ndarray, source_pixels: np.ndarray, source: str | None, target: str | None, scorers: Scorers
) -> dict[str, Any]:
    """CLIP image similarity to the input and, with both captions, directional similarity; on a
    canonical target caption of a world, whether its oracle reads the target."""
    row: dict[str, Any] = {}
    if scorers.clip is not None:
        images = scorers.clip.image_features([picture, source_pixels])
        row["image_similarity"] = float(images[0] @ images[1])
        if source is not None and target is not None:
            texts = scorers.clip.text_features([target, source])
            change, wanted = images[0] - images[1], texts[0] - texts[1]
            row["directional_similarity"] = float(change @ wanted / (change.norm() * wanted.norm()).clamp(min=1e-8))
    if target is not None and (match := oracle_match(picture, target)) is not None:
        row["oracle_target"] = match["all"]
    return row
