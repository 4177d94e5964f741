"""Built-in tasks: turn a JSON job into a call of the Python API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from retouch.batch.registry import TaskContext, TaskOutput
from retouch.core.generate import DEFAULT_SCHEDULER, generate
from retouch.core.limits import check_numbers
from retouch.core.schedulers import DEFAULT_STEPS
from retouch.errors import RetouchError
from retouch.io.convert import read_input_image
from retouch.io.hashing import pixels_sha256

# Fields every job may carry besides its task's own.
COMMON_FIELDS = {"id": str, "task": str, "model": str, "model_config": str, "retouch_version": str}
GENERATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "prompt": str,
    "negative_prompt": str,
    "num_images": int,
    "seed": int,
    "steps": int,
    "guidance_scale": (int, float),
    "scheduler": str,
    "width": int,
    "height": int,
}


def check_fields(
    job: dict[str, Any],
    task: str,
    fields: dict[str, type | tuple[type, ...]],
    aliases: dict[str, str] | None = None,
) -> None:
    """Reject unknown fields, wrong JSON types and numbers outside ``retouch.core.limits``
    (NaN, infinity, a step count past the limit) instead of quietly running with them."""
    allowed = {**COMMON_FIELDS, **fields}
    unknown = sorted(set(job) - set(allowed))
    if unknown:
        raise RetouchError(f"unknown field(s) {unknown} for task {task!r}; known fields: {sorted(allowed)}")
    for name, value in job.items():
        if value is None and name not in ("id", "task", "prompt"):
            continue  # null means "use the default"
        if isinstance(value, bool) or not isinstance(value, allowed[name]):
            raise RetouchError(f"field {name!r} has the wrong type: {value!r}")
    check_numbers(job, aliases)


def check_required(job: dict[str, Any], task: str, names: tuple[str, ...]) -> None:
    for name in names:
        if name not in job:
            article = "an" if task[0] in "aeiou" else "a"
            raise RetouchError(f"{article} {task} job needs a {name!r} field")


def get(job: dict[str, Any], name: str, default: Any) -> Any:
    """``job[name]``, or ``default`` when the field is missing or null."""
    value = job.get(name)
    return default if value is None else value


def check_model(ctx: TaskContext, job: dict[str, Any]) -> None:
    """A job may name its model, but a batch runs one model: refuse a mismatch."""
    wanted = job.get("model")
    if wanted is None or wanted == ctx.model.name:
        return
    if Path(wanted).expanduser().exists() and Path(wanted).expanduser().resolve() == Path(ctx.model.name):
        return
    raise RetouchError(
        f"job asks for model {wanted!r} but {ctx.model.name!r} is loaded; run it with --model {wanted}"
    )


def check_input_unchanged(job: dict[str, Any]) -> None:
    """A recipe's input image must still be the picture it was made from: its recorded size
    (``width``, ``height``) and pixel fingerprint (``image_sha256``), where the recipe has them.
    Without this a replay of an edit whose input was overwritten would quietly make another picture."""
    if job.get("image_sha256") is None and job.get("width") is None and job.get("height") is None:
        return
    source = read_input_image(job["image"]).image
    if (job.get("width"), job.get("height")) not in ((None, None), source.size):
        raise RetouchError(
            f"the recipe was made from a {job['width']}x{job['height']} image, but {job['image']} is "
            f"{source.size[0]}x{source.size[1]}"
        )
    if job.get("image_sha256") not in (None, pixels_sha256(np.asarray(source))):
        raise RetouchError(f"{job['image']} changed since the recipe was written; its pixels differ")


def check_generate_job(job: dict[str, Any]) -> None:
    check_fields(job, "generate", GENERATE_FIELDS)
    check_required(job, "generate", ("prompt",))


def generate_task(ctx: TaskContext, job: dict[str, Any]) -> TaskOutput:
    """``{"task": "generate", "prompt": ..., "seed": ...}``: missing fields take the defaults."""
    check_generate_job(job)
    check_model(ctx, job)
    result = generate(
        ctx.model,
        prompt=job["prompt"],
        negative_prompt=get(job, "negative_prompt", ""),
        num_images=get(job, "num_images", 1),
        seed=job.get("seed"),
        steps=get(job, "steps", DEFAULT_STEPS),
        guidance_scale=job.get("guidance_scale"),
        scheduler=get(job, "scheduler", DEFAULT_SCHEDULER),
        width=job.get("width"),
        height=job.get("height"),
        progress=ctx.progress,
    )
    recipe = {**result.recipes[0], "num_images": len(result.images)}
    return TaskOutput(
        images=result.images,
        recipes=result.recipes,
        recipe=recipe,
        report={"seeds": [r["seed"] for r in result.recipes], "seconds_per_image": result.seconds},
    )
