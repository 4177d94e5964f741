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
from retouch.io.atomic import check_writable
from retouch.io.images import load_image
from retouch.io.png import read_recipe, save_png
from retouch.models.adapters import verify_records
from retouch.models.loading import LoadedModel, load_model


@dataclass
class ReplayResult:
    path: Path  # the PNG written
    recipe: dict[str, Any]
    identical: bool  # the new pixels equal the source image's, bit for bit
    seconds: float


def default_replay_path(image_path: Path) -> Path:
    return image_path.with_name(f"{image_path.stem}.replay.png")


def check_recipe(recipe: dict[str, Any], registry: TaskRegistry, image_path: Path) -> None:
    """Refuse a recipe that is not one picture's, or that its task would refuse (fields, types,
    counts, sizes, steps, finite numbers), before the model loads or anything runs: a tampered
    ``"num_images": 1000`` must not make a thousand pictures first."""
    if recipe.get("num_images") not in (None, 1):
        raise RetouchError(
            f"the recipe in {image_path} makes {recipe['num_images']!r} images; a PNG's recipe makes 1"
        )
    try:
        registry.check(recipe)
    except RetouchError as e:
        raise RetouchError(f"{image_path}: bad recipe: {e}") from e


INPUT_KEYS = ("image", "mask")  # recipe fields naming files the replay reads


def check_output_apart(output: Path, inputs: list[Any]) -> None:
    """Refuse an output that is the PNG being replayed or a file its recipe reads, before any work."""
    for given in inputs:
        if isinstance(given, str | os.PathLike) and Path(given).exists() and output.resolve() == Path(given).resolve():
            raise RetouchError(
                f"refusing to overwrite the input {given}: replay never overwrites its input; choose another --output"
            )
    check_writable(output.parent)


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
    adapters: dict[str, Any] | None = None,
) -> ReplayResult:
    """Re-create the image at ``image_path`` from its recipe and write it to ``output``.

    The concepts, embeddings and LoRAs the recipe records are applied again; a recorded file that
    is missing or whose sha256 changed is refused before the model loads.

    Args:
        model: overrides the recipe's model (a name, path or hub id, or an already loaded model).
        output: defaults to ``NAME.replay.png`` beside the source.
        adapters: job fields adding adapters the recipe cannot name (``concepts``, ``embeddings``,
            ``loras``, ``lora_dir``), e.g. for an AUTOMATIC1111 PNG whose prompt has ``<lora:name:w>``.
    """
    image_path = Path(image_path)
    recipe = {**read_recipe(image_path), **(adapters or {})}
    registry = registry or default_registry()
    check_recipe(recipe, registry, image_path)
    output = Path(output) if output else default_replay_path(image_path)
    check_output_apart(output, [image_path, *(recipe.get(key) for key in INPUT_KEYS)])
    records = recipe.get("adapters") or []
    verify_records(records, f"the recipe in {image_path}")
    if not isinstance(model, LoadedModel):
        name = model or recipe.get("model")
        if not name:
            raise RetouchError(f"{image_path}'s recipe names no model; pass --model")
        model = load_model(name, device, dtype, config or recipe.get("model_config"))
    job = {**recipe, "model": model.name}
    if model.config:
        job["model_config"] = model.config
    start = time.perf_counter()
    result = registry.run(TaskContext(model, progress), job)
    if len(result.images) != 1:
        raise RetouchError(f"the recipe in {image_path} makes {len(result.images)} images, expected 1")
    path = save_png(result.images[0], output, result.recipes[0])
    identical = np.array_equal(
        np.asarray(load_image(image_path)), np.asarray(result.images[0].convert("RGB"))
    )
    return ReplayResult(path, result.recipes[0], identical, time.perf_counter() - start)
