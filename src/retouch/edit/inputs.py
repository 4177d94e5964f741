"""What ``edit`` takes in: the picture, the user's mask, and the checks on its arguments.

Each check raises a short ``RetouchError`` that names the flag to change, before any model runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from retouch.core.limits import check_numbers
from retouch.core.seeding import MAX_SEED
from retouch.edit import masks
from retouch.edit.tries import check_tries
from retouch.errors import RetouchError
from retouch.io.convert import InputImage, read_input_image, to_rgb

ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray
METHODS: tuple[str, ...] = ("blend", "sdedit", "inpaint", "diffedit")
REGION_CHOICES: tuple[str, ...] = ("auto", "foreground", "background", "global")


def read_image(image: ImageInput) -> InputImage:
    """A file path (size-checked from its header), a PIL image or an (H, W, 3) array, as RGB."""
    if isinstance(image, str | os.PathLike):
        return read_input_image(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise RetouchError(
                f"an image array must be uint8 of shape (H, W), (H, W, 3) or (H, W, 4); got {image.dtype} {image.shape}"
            )
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise RetouchError(f"image must be a file path, a PIL image or an array, got {type(image).__name__}")
    return to_rgb(image)


def read_user_mask(mask: ImageInput | None, size: tuple[int, int]) -> np.ndarray | None:
    """The user's mask (white = edit) as (H, W) bool for an image of ``size`` (width, height)."""
    if mask is None:
        return None
    if isinstance(mask, str | os.PathLike):
        return masks.read_mask(mask, size)
    values = masks.mask_from_image(mask)
    if values.shape != (size[1], size[0]):
        raise RetouchError(f"the mask is {values.shape[1]}x{values.shape[0]} but the image is {size[0]}x{size[1]}")
    return values


def check_edit_text(target_prompt: str, judge: Any, mask: Any, region: str) -> None:
    """Refuse an empty target caption (unless a mask or a region says where to draw) and a judge
    that names no CLIP folder, so a typo in ``--judge`` is reported and not silently unused."""
    if not isinstance(target_prompt, str):
        raise RetouchError(f"the target caption must be text, got {type(target_prompt).__name__}")
    if not target_prompt.strip() and mask is None and region == "auto":
        raise RetouchError(
            "the target caption is empty; describe the picture you want (e.g. 'a large green circle on a "
            "blue background'), or give --mask PNG or --region to say where to draw"
        )
    if isinstance(judge, str | os.PathLike) and str(judge) != "oracle" and not Path(judge).is_dir():
        raise RetouchError(f"--judge {judge}: not 'oracle' and not a CLIP model folder; check the path")


def check_edit_arguments(
    method: str,
    region: str,
    strength: float | str,
    seed: int,
    steps: int,
    classifier: str,
    llm_url: str | None,
    mask: Any,
    guidance_scale: float | None = None,
    tries: int = 1,
) -> None:
    """Refuse arguments ``edit`` cannot run with, naming the flag to change."""
    check_tries(tries)
    if method not in METHODS:
        raise RetouchError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if region not in REGION_CHOICES:
        raise RetouchError(f"unknown region {region!r}; choose one of: {', '.join(REGION_CHOICES)}")
    if strength != "auto" and (
        isinstance(strength, bool) or not isinstance(strength, int | float) or not 0 < strength <= 1
    ):
        raise RetouchError(f"strength must be in (0, 1] or 'auto', got {strength!r}")
    if not 0 <= seed <= MAX_SEED:
        raise RetouchError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    check_numbers({"steps": steps, "guidance_scale": guidance_scale})
    if classifier not in ("rules", "llm"):
        raise RetouchError(f"unknown classifier {classifier!r}; choose rules or llm")
    if classifier == "llm" and not llm_url:
        raise RetouchError("--classifier llm needs --llm-url URL (an OpenAI-compatible endpoint)")
    if mask is not None and method in ("sdedit", "diffedit"):
        raise RetouchError(f"--method {method} makes its own mask (or none); drop --mask or use --method inpaint")
