"""Batch task ``instruct``: a JSON job -> ``retouch.edit.instruct.instruct``.

Writes ``{id}.png`` (the edit), ``{id}.mask.png``, ``{id}.layer.png`` and the report ``{id}.json``.
Each PNG's recipe replays that PNG.
"""

from __future__ import annotations

from typing import Any

from retouch.batch.edit_tasks import check_output, edit_output
from retouch.batch.registry import TaskContext, TaskOutput
from retouch.batch.tasks import check_fields, check_input_unchanged, check_model, check_required, get
from retouch.edit.instruct import DEFAULT_SCHEDULER, check_instruct_arguments, instruct
from retouch.edit.layer import DEFAULT_FEATHER_PX
from retouch.errors import RetouchError

INSTRUCT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "image": str,
    "instruction": str,
    "seed": int,
    "negative_prompt": str,
    "steps": int,
    "guidance_scale": (int, float),
    "image_guidance_scale": (int, float),
    "scheduler": str,
    "preserve": bool,
    "feather": int,
    "output": str,  # which file of the edit the job returns as {id}.png: image (all three), mask or layer
    # written by recipes:
    "prompt": str,  # the instruction, for AUTOMATIC1111's parameters text; not read
    "width": int,
    "height": int,
    "image_sha256": str,
}


def check_instruct_job(job: dict[str, Any]) -> None:
    """Fields, types, numbers and an instruction that says something; no model needed."""
    preserve = job.get("preserve")
    check_fields({k: v for k, v in job.items() if k != "preserve"}, "instruct", INSTRUCT_FIELDS)
    if preserve is not None and not isinstance(preserve, bool):
        raise RetouchError(f"field 'preserve' must be true or false, got {preserve!r}")
    check_required(job, "instruct", ("image", "instruction"))
    check_output(job)
    check_instruct_arguments(job["instruction"], get(job, "seed", 0), {})


def instruct_task(ctx: TaskContext, job: dict[str, Any]) -> TaskOutput:
    """``{"task": "instruct", "image", "instruction", "seed", "preserve", ...}``: missing fields
    take the model's defaults."""
    check_instruct_job(job)
    check_model(ctx, job)
    check_input_unchanged(job)
    result = instruct(
        ctx.model,
        job["image"],
        job["instruction"],
        seed=job.get("seed"),
        steps=job.get("steps"),
        guidance_scale=job.get("guidance_scale"),
        image_guidance_scale=job.get("image_guidance_scale"),
        negative_prompt=get(job, "negative_prompt", ""),
        scheduler=get(job, "scheduler", DEFAULT_SCHEDULER),
        preserve=get(job, "preserve", False),
        feather=get(job, "feather", DEFAULT_FEATHER_PX),
        progress=ctx.progress,
    )
    return edit_output(result, get(job, "output", "image"))
