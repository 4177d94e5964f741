"""``replay``: re-run the recipe stored in a PNG through the same task registry as batch."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retouch.batch.registry import TaskContext, TaskRegistry, default_registry
from retouch.errors import RetouchError
from retouch.io.images import load_image
from retouch.io.png import read_recipe, save_png
from retouch.models.loading import LoadedModel, load_model


@dataclass
class ReplayResult:
    path: Path  # the PNG written
    recipe: dict[str, Any]
    identical: bool  # the new pixels equal the source image's, bit for bit
    seconds: float


def default_replay_path(image_path: Path) -> Path:
    return image_path.with_name(f"{image_path.stem}.replay.png")


def replay(
    image_path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    model: str | LoadedModel | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
    config: str | None = None,
    registry: TaskRegistry | None = None,
    progress: bool = False,
) -> ReplayResult:
    """Re-create the image at ``image_path`` from its recipe and write it to ``output``.

    Args:
        model: overrides the recipe's model (a name, path or hub id, or an already loaded model).
        output: defaults to ``NAME.replay.png`` beside the source.
    """
    image_path = Path(image_path)
    recipe = read_recipe(image_path)
    if not isinstance(model, LoadedModel):
        name = model or recipe.get("model")
        if not name:
            raise RetouchError(f"{image_path}'s recipe names no model; pass --model")
        model = load_model(name, device, dtype, config or recipe.get("model_config"))
    job = {**recipe, "model": model.name}
    if model.config:
        job["model_config"] = model.config
    start = time.perf_counter()
    result = (registry or default_registry()).run(TaskContext(model, progress), job)
    if len(result.images) != 1:
        raise RetouchError(f"the recipe in {image_path} makes {len(result.images)} images, expected 1")
    path = save_png(
        result.images[0], Path(output) if output else default_replay_path(image_path), result.recipes[0]
    )
    identical = np.array_equal(
        np.asarray(load_image(image_path)), np.asarray(result.images[0].convert("RGB"))
    )
    return ReplayResult(path, result.recipes[0], identical, time.perf_counter() - start)
