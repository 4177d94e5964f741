"""Batch task ``imagic``: a JSON job -> ``retouch.edit.imagic.imagic``.

Writes ``{id}.png`` (the edit, whose recipe holds the eta and seed chosen, so it replays without
a sweep) and the report ``{id}.json`` (stages, cache status, the eta sweep and the choice).
"""

from __future__ import annotations

from typing import Any

from retouch.batch.registry import TaskContext, TaskOutput
from retouch.batch.tasks import check_fields, check_input_unchanged, check_model, check_required, get
from retouch.edit.imagic import DEFAULT_ETA, DEFAULT_SCHEDULER, DEFAULT_STEPS, imagic

IMAGIC_FIELDS: dict[str, type | tuple[type, ...]] = {
    "image": str,
    "target": str,
    "eta": (int, float, str),  # a number in [0, 2] or "auto"
    "seed": int,
    "seeds": int,  # eta "auto": seeds tried per eta
    "tries": (int, str),  # eta "auto": sweeps from the next seeds while the judge accepts none, or "auto"
    "region": str,  # what stage C redraws: "auto", "foreground", "background" or "global"
    "tune": str,  # "lora" or "full"
    "embed_steps": int,
    "tune_steps": int,
    "lr_embed": (int, float),
    "lr_tune": (int, float),
    "lora_rank": int,
    "batch_size": int,
    "train_seed": int,
    "steps": int,
    "guidance_scale": (int, float),
    "scheduler": str,
    "cache": str,  # the cache folder of stages A and B
    "judge": str,  # eta "auto": "oracle" or a CLIP model folder
    "source": str,  # eta "auto" with a CLIP judge: a caption of the input
    # written by recipes:
    "prompt": str,  # the target caption, for AUTOMATIC1111's parameters text; not read
    "width": int,
    "height": int,
    "image_sha256": str,
}


def check_imagic_job(job: dict[str, Any]) -> None:
    check_fields(job, "imagic", IMAGIC_FIELDS)
    check_required(job, "imagic", ("image", "target"))


def imagic_task(ctx: TaskContext, job: dict[str, Any]) -> TaskOutput:
    """``{"task": "imagic", "image", "target", "eta", "seed", ...}``: missing fields take the defaults."""
    check_imagic_job(job)
    check_model(ctx, job)
    check_input_unchanged(job)
    result = imagic(
        ctx.model,
        job["image"],
        job["target"],
        eta=get(job, "eta", DEFAULT_ETA),
        seed=job.get("seed"),
        seeds=get(job, "seeds", 1),
        tries=get(job, "tries", "auto"),
        region=get(job, "region", "auto"),
        tune=get(job, "tune", "lora"),
        embed_steps=job.get("embed_steps"),
        tune_steps=job.get("tune_steps"),
        lr_embed=job.get("lr_embed"),
        lr_tune=job.get("lr_tune"),
        lora_rank=job.get("lora_rank"),
        batch_size=job.get("batch_size"),
        train_seed=get(job, "train_seed", 0),
        steps=get(job, "steps", DEFAULT_STEPS),
        guidance_scale=job.get("guidance_scale"),
        scheduler=get(job, "scheduler", DEFAULT_SCHEDULER),
        cache_dir=job.get("cache"),
        judge=job.get("judge"),
        source=job.get("source"),
        progress=ctx.progress,
    )
    return TaskOutput([result.image], [result.recipe], result.recipe, result.report)

