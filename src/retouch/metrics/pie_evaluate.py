"""``retouch evaluate --pie``'s library side: PIE-Bench's metrics (``retouch.metrics.pie``) over
edited pictures, each found with its source picture, edit mask and prompts.

Where each input comes from, first found first:

- source picture: ``sources`` (one file for all, or a folder matched by file name), else the
  ``image`` path the edit's recipe records;
- mask (white = edited): ``masks`` (a file or a folder), else ``NAME.mask.png`` that ``retouch edit``
  writes beside ``NAME.png``;
- target prompt: ``target``, else ``captions`` (JSONL by file name), else the recipe's ``target``;
- source prompt (for ``clip_similarity_source_image`` only): ``source_prompt``, else the recipe's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retouch.errors import RetouchError
from retouch.io.images import load_image
from retouch.metrics.clip_score import ClipScorer
from retouch.metrics.evaluate import Evaluation, column_means, list_images, load_scorers, match_file, read_captions
from retouch.metrics.lpips import LPIPS, load_lpips
from retouch.metrics.pie import COLUMNS, paper_row, pie_metrics
from retouch.metrics.structure import load_dino
from retouch.metrics.weights import MissingWeights

PIE_CLIP = "openai/clip-vit-large-patch14"
PIE_CLIP_VISION = {"patch_size": 14, "hidden_size": 1024, "num_hidden_layers": 24, "image_size": 224}
PIE_DINO = {"patch_size": 8, "hidden_size": 768, "num_hidden_layers": 12}  # dino_vitb8
PathLike = str | os.PathLike[str]


@dataclass
class PieScorers:
    """The networks PIE-Bench's metrics use, as found; ``notes`` says which are missing and why."""

    clip: ClipScorer | None = None
    lpips: LPIPS | None = None  # the SqueezeNet variant
    dino: torch.nn.Module | None = None
    notes: list[str] = field(default_factory=list)


def load_pie_scorers(
    clip: PathLike | None = None,
    lpips_weights: PathLike | Sequence[PathLike] | None = None,
    dino: PathLike | None = None,
    device: str | torch.device = "cpu",
) -> PieScorers:
    """Load what is given and present; a missing network becomes a note, its columns are left out."""
    found = load_scorers(clip, device=device, want=("clip",))
    scorers = PieScorers(clip=found.clip, notes=list(found.notes))
    if scorers.clip is not None and not _is_like(scorers.clip.model.config.vision_config, PIE_CLIP_VISION):
        scorers.notes.append(
            f"CLIP figures compare with PIE-Bench's only on {PIE_CLIP}; this run used {found.clip.name}"
        )
    try:
        scorers.lpips = load_lpips(lpips_weights, device, net="squeeze")
    except MissingWeights as e:
        scorers.notes.append(f"lpips_unedit_part skipped: {e}")
    if dino is None:
        scorers.notes.append("structure_distance skipped: pass --dino FOLDER (a transformers DINO ViT)")
    else:
        try:
            scorers.dino = load_dino(dino, device)
        except MissingWeights as e:
            scorers.notes.append(f"structure_distance skipped: {e}")
        if scorers.dino is not None and not _is_like(scorers.dino.config, PIE_DINO):
            scorers.notes.append(f"structure_distance compares with PIE-Bench's only on DINO ViT-B/8; {dino} is not")
    return scorers


def _is_like(config: object, wanted: dict[str, int]) -> bool:
    return all(getattr(config, key, None) == value for key, value in wanted.items())


def edited_paths(edited: PathLike | Sequence[PathLike]) -> list[Path]:
    """A folder's pictures (an edit's side files left out), or the files given."""
    items = [Path(edited)] if isinstance(edited, str | os.PathLike) else [Path(p) for p in edited]
    if len(items) == 1 and items[0].is_dir():
        paths = list_images(items[0])
        if not paths:
            raise RetouchError(f"no pictures in {items[0]}")
        return paths
    for path in items:
        if not path.is_file():
            raise RetouchError(f"edited picture not found: {path} (give picture files or one folder)")
    return items


def _recipe(path: Path) -> dict[str, Any]:
    from retouch.io.png import read_recipe

    try:
        return read_recipe(path)
    except RetouchError:
        return {}


def _found(given: Path | None, name: str) -> Path | None:
    """``given`` itself when a file, its file named ``name`` when a folder."""
    if given is None or given.is_file():
        return given
    if not given.is_dir():
        raise RetouchError(f"not found: {given}")
    return match_file(given, name)


def _pair(path: Path, sources: Path | None, masks: Path | None, recipe: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """(source, edited, mask) of one edited picture, checked to share one size."""
    source_path = _found(sources, path.name)
    if source_path is None and recipe.get("image") and Path(str(recipe["image"])).is_file():
        source_path = Path(str(recipe["image"]))
    if source_path is None:
        raise RetouchError(f"no source picture for {path}: pass --references FILE or DIR (matched by file name)")
    mask_path = _found(masks, path.name) if masks is not None else path.with_name(path.stem + ".mask.png")
    if mask_path is None or not mask_path.is_file():
        raise RetouchError(
            f"no edit mask for {path}: pass --masks FILE or DIR (white = edited), or keep the "
            f"{path.stem}.mask.png that retouch edit writes beside it"
        )
    source, edited = np.asarray(load_image(source_path)), np.asarray(load_image(path))
    mask = np.asarray(load_image(mask_path, mode="L")) > 127
    if source.shape != edited.shape or mask.shape != edited.shape[:2]:
        raise RetouchError(
            f"{path.name}: the edited picture is {edited.shape[1]}x{edited.shape[0]}, its source {source_path.name} "
            f"{source.shape[1]}x{source.shape[0]}, its mask {mask_path.name} {mask.shape[1]}x{mask.shape[0]}: "
            "PIE-Bench compares pictures of one size"
        )
    return source, edited, mask


def evaluate_pie(
    edited: PathLike | Sequence[PathLike],
    sources: PathLike | None = None,
    masks: PathLike | None = None,
    target: str | None = None,
    captions: PathLike | None = None,
    source_prompt: str | None = None,
    scorers: PieScorers | None = None,
    border: bool = True,
) -> Evaluation:
    """PIE-Bench's columns for each edited picture, their means (``inf`` PSNR and ``nan`` left out)
    and the same means in the paper's units (``PAPER_COLUMNS``)."""
    scorers = scorers or PieScorers()
    paths = edited_paths(edited)
    caption_of = read_captions(captions) if captions else {}
    sources, masks = (Path(p) if p is not None else None for p in (sources, masks))
    notes, rows = list(scorers.notes), []
    for path in paths:
        recipe = _recipe(path)
        source, picture, mask = _pair(path, sources, masks, recipe)
        prompt = target or caption_of.get(path.name) or recipe.get("target")
        if prompt is None and scorers.clip is not None:
            notes.append(f"{path.name}: no target prompt (--target, --captions or the recipe's); CLIP left out")
        metrics = pie_metrics(
            source,
            picture,
            mask,
            None if prompt is None else str(prompt),
            source_prompt or recipe.get("source"),
            clip=scorers.clip,
            lpips=scorers.lpips,
            dino=scorers.dino,
            border=border,
        )
        rows.append({"file": path.name, **metrics})
    exact = sum(1 for row in rows if row.get("psnr_unedit_part") == math.inf)
    if exact:
        notes.append(f"{exact} of {len(rows)} edits keep the background exactly (PSNR inf): left out of PSNR's mean")
    means = column_means(rows, prefix="")
    summary = {name: means[name] for name in COLUMNS if name in means}
    summary.update(paper_row(summary))
    return Evaluation(rows, summary, notes, name="pie_bench", counts={"pairs": len(rows)})
