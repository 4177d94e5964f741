"""Batch task ``edit``: a JSON job -> ``retouch.edit.edit``.

Writes ``{id}.png`` (the edit), ``{id}.mask.png``, ``{id}.layer.png`` and the report ``{id}.json``,
whose ``"region"`` holds the region decision. Each PNG's recipe replays that PNG.
"""

from __future__ import annotations

from typing import Any

from retouch.batch.registry import TaskContext, TaskOutput
from retouch.batch.tasks import check_fields, check_input_unchanged, check_model, check_required, get
from retouch.edit.api import (
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    OUTPUTS,
    edit,
)
from retouch.edit.result import EditResult
from retouch.errors import RetouchError

EDIT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "image": str,
    "source": str,
    "target": str,
    "seed": int,
    "strength": (int, float, str),  # a number in (0, 1] or "auto"
    "region": str,
    "mask": str,
    "method": str,
    "steps": int,
    "guidance_scale": (int, float),
    "scheduler": str,
    "judge": str,  # for strength "auto" and tries: "oracle" or a CLIP model folder
    "tries": (int, str),  # seeds tried while the judge rejects the edit, or "auto" (recipes: the one kept, 1)
    "classifier": str,
    "llm_url": str,
    "output": str,  # which file of the edit the job returns as {id}.png: image (all three), mask or layer
    # written by recipes:
    "prompt": str,  # the target caption, for AUTOMATIC1111's parameters text; not read
    "width": int,  # the input's size, checked against the image
    "height": int,
    "image_sha256": str,  # the input's pixels when the recipe was written, checked
}


def check_edit_job(job: dict[str, Any]) -> None:
    check_fields(job, "edit", EDIT_FIELDS)
    check_required(job, "edit", ("image", "source", "target"))
    check_output(job)


def edit_task(ctx: TaskContext, job: dict[str, Any]) -> TaskOutput:
    """``{"task": "edit", "image", "source", "target", "seed", "strength", "region", "mask", "method"}``."""
    check_edit_job(job)
    check_model(ctx, job)
    output = get(job, "output", "image")
    check_input_unchanged(job)
    result = edit(
        ctx.model,
        job["image"],
        job["source"],
        job["target"],
        method=get(job, "method", "blend"),
        region=get(job, "region", "auto"),
        mask=job.get("mask"),
        strength=get(job, "strength", DEFAULT_STRENGTH),
        seed=job.get("seed"),
        steps=get(job, "steps", DEFAULT_STEPS),
        guidance_scale=job.get("guidance_scale"),
        scheduler=get(job, "scheduler", DEFAULT_SCHEDULER),
        judge=job.get("judge"),
        tries=get(job, "tries", 1 if "image_sha256" in job else "auto"),  # a recipe written before "tries": 1
        classifier=get(job, "classifier", "rules"),
        llm_url=job.get("llm_url"),
        progress=ctx.progress,
    )
    return edit_output(result, output)


def check_output(job: dict[str, Any]) -> None:
    """``"output"``, which file of an edit a job returns as its picture, must name one."""
    output = get(job, "output", "image")
    if output not in OUTPUTS:
        raise RetouchError(f"'output' must be one of {', '.join(OUTPUTS)}, got {output!r}")


def edit_output(result: EditResult, output: str) -> TaskOutput:
    """The edit, its mask and its layer as a task's pictures; ``output`` other than ``"image"``
    (a replay of the mask or layer file): that file alone."""
    files = result.files()
    if output != "image":
        picture, recipe = files[f".{output}"]
        return TaskOutput([picture], [recipe], recipe, result.report)
    return TaskOutput(
        [result.image],
        [result.recipe],
        result.recipe,
        result.report,
        extra_images={suffix: file for suffix, file in files.items() if suffix},
    )

