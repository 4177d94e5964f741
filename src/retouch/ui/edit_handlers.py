"""The Edit tab's handlers: plain functions over ``retouch.edit.edit`` that return what the
components show. They raise ``RetouchError`` on bad input; ``app`` shows it as a message."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from retouch.edit.api import DEFAULT_STRENGTH, edit
from retouch.errors import RetouchError
from retouch.io.convert import read_input_image
from retouch.io.outputs import numbered_stem
from retouch.io.png import read_recipe
from retouch.models.adapters import adapters_applied
from retouch.ui.session import UISession, public

OVERLAY_COLOUR = np.array([255, 0, 64], dtype=np.float32)  # what the mask is tinted in
OVERLAY_ALPHA = 0.5


@dataclass
class EditView:
    """What the Edit tab shows after a run."""

    image: Path  # the edit, saved with its recipe under outputs/edit/
    overlay: Image.Image  # the mask laid over the input
    before_after: tuple[Image.Image, Image.Image]  # for the slider
    region: str  # one line: the region, its confidence, the mask's area, the strength
    report: dict[str, Any]  # the JSON report, with no server paths
    files: list[Path]  # the PNG, mask, RGBA layer and report, to download


def seed_value(seed: str | float | None) -> int | None:
    """A seed box's text (a text box: a browser's numbers lose digits past 2**53): empty or -1
    means random."""
    text = str(seed).strip() if seed is not None else ""
    if text in ("", "-1"):
        return None
    try:
        return int(text)
    except ValueError:
        raise RetouchError(f"the seed must be a whole number (empty: random), got {text!r}") from None


def strength_value(text: str | float | None) -> float | str:
    """The strength box: a number in (0, 1] or ``auto``; empty means the default."""
    text = str(text).strip() if text is not None else ""
    if text in ("", "auto"):
        return text or DEFAULT_STRENGTH
    try:
        value = float(text)
    except ValueError:
        raise RetouchError(f"strength must be a number in (0, 1] or 'auto', got {text!r}") from None
    if not 0 < value <= 1:
        raise RetouchError(f"strength must be in (0, 1], got {value}")
    return value


def caption_from_recipe(picture: str | None) -> str:
    """The caption a PNG's recipe gives its picture (an edit's target, a generation's prompt),
    to fill in the source caption; empty when the file carries none."""
    if not picture:
        return ""
    try:
        return str(read_recipe(picture).get("prompt", ""))
    except RetouchError:
        return ""


def painted_mask(session: UISession, editor: dict[str, Any] | None) -> Path | None:
    """The strokes painted in the image editor as a mask file (white = edit) under
    outputs/inputs/, so the recipe replays; None when nothing was painted."""
    layers = (editor or {}).get("layers") or []
    painted = [np.asarray(layer)[..., 3] > 0 for layer in layers if np.asarray(layer).ndim == 3]
    if not painted or not np.any(painted):
        return None
    mask = Image.fromarray((np.any(painted, axis=0) * 255).astype(np.uint8), mode="L")
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return session.keep_bytes(buffer.getvalue(), ".mask.png")


def overlay(picture: Image.Image, mask: Image.Image) -> Image.Image:
    """``mask`` (255 = edited) tinted over ``picture``, to check what the edit was allowed to touch."""
    rgb = np.asarray(picture.convert("RGB"), dtype=np.float32)
    alpha = np.asarray(mask.convert("L"), dtype=np.float32)[..., None] / 255 * OVERLAY_ALPHA
    return Image.fromarray((rgb * (1 - alpha) + OVERLAY_COLOUR * alpha).round().astype(np.uint8))


def run_edit(
    session: UISession,
    picture: str | None,
    source: str,
    target: str,
    *,
    method: str = "blend",
    region: str = "auto",
    strength: str | float | None = None,
    steps: int = 25,
    seed: str | float | None = None,
    guidance_scale: float | None = None,
    editor: dict[str, Any] | None = None,
    concepts: list[str] | None = None,
) -> EditView:
    """``retouch edit`` on an uploaded picture (with the ``concepts`` picked by name), saved under
    outputs/edit/ (the four files)."""
    if not picture:
        raise RetouchError("upload a picture to edit first")
    read_input_image(picture)  # a clear message for a non-image before anything is copied
    kept = session.keep_input(picture)
    with adapters_applied(session.model, concepts=session.concept_folders(concepts)) as model:
        result = edit(
            model,
            kept,
            source,
            target,
            method=method,
            region=region,
            mask=painted_mask(session, editor),
            strength=strength_value(strength),
            seed=seed_value(seed),
            steps=int(steps),
            guidance_scale=guidance_scale or None,
            progress=True,
        )
    stem = numbered_stem(session.folder("edit"), result.report["seed"])
    files = result.save(stem.with_name(f"{stem.name}.png"))
    report = result.report
    before = read_input_image(kept).image
    return EditView(
        image=files[""],
        overlay=overlay(before, result.mask),
        before_after=(before, result.image),
        region=(
            f"Region: **{report['region']}** (confidence {report['region_confidence']:.2f}), mask "
            f"{report['mask_area']:.1%} of the picture, strength {report['strength']}, seed {report['seed']}"
        ),
        report=public(report),
        files=[files[""], files[".mask"], files[".layer"], files[".json"]],
    )
