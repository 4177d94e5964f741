"""Where outputs go in a folder: AUTOMATIC1111-style numbered files, each PNG with its recipe.

A run writes ``NNNNN-SEED.png`` (one picture) or ``NNNNN-SEED-KK.png`` plus a sheet such as
``NNNNN-SEED-strip.png`` (a sequence), where ``NNNNN`` is one past the highest number already in
the folder, so a new run never overwrites an old one and the files sort in the order they were
made. The result objects (``InterpolateResult.save``, ``SweepResult.save``) and the CLI use these.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from retouch.io.atomic import check_writable
from retouch.io.png import save_png

NUMBER_RE = re.compile(r"^(\d{5,})-")


@dataclass
class SavedFiles:
    """What a result's ``save`` wrote."""

    files: list[Path]  # one PNG per picture, in order, each with the recipe that replays it
    sheet: Path | None = None  # all pictures in one row (a contact strip or a sweep's grid)
    animation: Path | None = None  # an animated GIF of the pictures


def next_index(folder: str | os.PathLike[str]) -> int:
    """A1111-style numbering: one past the highest ``NNNNN-`` prefix of a PNG in ``folder``."""
    numbers = [int(m.group(1)) for p in Path(folder).glob("*.png") if (m := NUMBER_RE.match(p.name))]
    return max(numbers, default=-1) + 1


def numbered_stem(folder: str | os.PathLike[str], seed: int) -> Path:
    """``folder/NNNNN-SEED``: the next free number, for a run's files to share."""
    check_writable(folder)
    return Path(folder) / f"{next_index(folder):05d}-{seed}"


def save_numbered(
    folder: str | os.PathLike[str], images: Sequence[Image.Image], recipes: Sequence[dict[str, Any]]
) -> list[Path]:
    """Write each image with its recipe as ``NNNNN-SEED.png``, numbered on from the folder's last."""
    check_writable(folder)
    index = next_index(folder)
    return [
        save_png(image, Path(folder) / f"{index + i:05d}-{recipe['seed']}.png", recipe)
        for i, (image, recipe) in enumerate(zip(images, recipes, strict=True))
    ]


def save_sequence(
    stem: str | os.PathLike[str],
    images: Sequence[Image.Image],
    recipes: Sequence[dict[str, Any]],
    numbers: Sequence[int] | None = None,
) -> list[Path]:
    """Write picture ``k`` of a sequence as ``{stem}-KK.png`` with its recipe; ``numbers`` gives
    each picture's ``KK`` when only some of the sequence was made (default: 0, 1, 2, ...)."""
    numbers = range(len(images)) if numbers is None else numbers
    return [
        save_png(image, f"{stem}-{k:02d}.png", recipe)
        for k, image, recipe in zip(numbers, images, recipes, strict=True)
    ]
