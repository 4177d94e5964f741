"""``EditResult``: an edit's three pictures, its report and its recipe, and the one place that
decides where they may be written."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from retouch.errors import RetouchError
from retouch.io.atomic import atomic_write_json, check_writable
from retouch.io.png import save_png

OUTPUTS: tuple[str, ...] = ("image", "mask", "layer")
SUFFIXES: tuple[str, ...] = ("", ".mask", ".layer")  # the file of each output: PATH{suffix}.png


def output_paths(
    path: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None] = ()
) -> dict[str, Path]:
    """The files an edit saved at ``path`` writes: suffix -> path (``""``, ``".mask"``,
    ``".layer"`` and the report ``".json"``); checked before any work is done.

    Raises:
        RetouchError: ``path`` is not a .png, one of the files is an input, or the folder is not
            writable.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise RetouchError(f"the output must be a .png file (it carries the recipe), got {path}")
    stem = path.with_suffix("")
    targets = {suffix: Path(f"{stem}{suffix}.png") for suffix in SUFFIXES}
    targets[".json"] = Path(f"{stem}.json")
    given = {Path(p).resolve() for p in inputs if p}
    for target in targets.values():
        if target.resolve() in given:
            raise RetouchError(
                f"refusing to overwrite the input {target}: the input is never overwritten; choose another --output"
            )
    check_writable(path.parent)
    return targets


@dataclass
class EditResult:
    image: Image.Image  # RGB, exactly the input's size
    mask: Image.Image  # L, 255 = edited
    layer: Image.Image  # RGBA: the edited pixels with the feathered mask as alpha
    report: dict[str, Any]  # region decision, mask area, strength (and its search), timings, metrics
    recipe: dict[str, Any]  # task "edit": replays this edit bit for bit

    def files(self) -> dict[str, tuple[Image.Image, dict[str, Any]]]:
        """File suffix -> (picture, its recipe): ``""`` the edit, ``".mask"``, ``".layer"``. Each
        recipe names its ``output``, so replaying any of the three files re-creates that file."""
        return {
            "": (self.image, self.recipe),
            ".mask": (self.mask, {**self.recipe, "output": "mask"}),
            ".layer": (self.layer, {**self.recipe, "output": "layer"}),
        }

    def save(self, path: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``PATH.png``, ``PATH.mask.png``, ``PATH.layer.png`` (each with its recipe) and the
        report ``PATH.json``, atomically; refuses to write over the input image or mask."""
        targets = output_paths(path, (self.recipe["image"], self.recipe.get("mask")))
        for suffix, (picture, recipe) in self.files().items():
            save_png(picture, targets[suffix], recipe)
        atomic_write_json(targets[".json"], self.report)
        return targets


def json_safe_metrics(metrics: dict[str, dict[str, float | int]]) -> dict[str, dict[str, Any]]:
    """JSON has no inf or nan: identical parts get ``psnr: null, identical: true``."""
    safe: dict[str, dict[str, Any]] = {}
    for part, values in metrics.items():
        psnr, ssim = values["psnr"], values["ssim"]
        safe[part] = {
            "psnr": psnr if math.isfinite(psnr) else None,
            "ssim": ssim if math.isfinite(ssim) else None,
            "pixels": values["pixels"],
            "identical": psnr == math.inf,
        }
    return safe
