"""Batch tasks for steering in text-embedding space: ``style`` and ``interpolate``."""

from __future__ import annotations

from typing import Any

from retouch.batch.registry import TaskContext, TaskOutput
from retouch.batch.tasks import GENERATE_FIELDS, check_fields, check_model, check_required, get
from retouch.core.generate import DEFAULT_SCHEDULER
from retouch.core.schedulers import DEFAULT_STEPS
from retouch.errors import RetouchError
from retouch.steer.interpolate import DEFAULT_FRAMES, interpolate
from retouch.steer.style import DEFAULT_STYLE_DIRECTION, parse_sweep, style_amount, style_sweep, stylize
from retouch.steer.style_auto import stylize_auto

STYLE_FIELDS: dict[str, type | tuple[type, ...]] = {
    **GENERATE_FIELDS,
    "style": str,
    "amount": (int, float, str),  # theta, or "auto": the amount a judge chooses (steer.style_auto)
    "judge": str,  # amount "auto": "oracle" or a CLIP model folder
    "strength": (int, float),  # amount's old name: recipes written before the rename carry it
    "direction": str,
    "sweep": str,  # "a:b:n": the grid of n amounts as {id}.png, amount k as {id}_{k}.png
}
INTERPOLATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    **{name: GENERATE_FIELDS[name] for name in ("negative_prompt", "seed", "steps", "guidance_scale")},
    **{name: GENERATE_FIELDS[name] for name in ("scheduler", "width", "height")},
    "prompt": str,  # written by recipes for AUTOMATIC1111's parameters text; not read
    "prompt_a": str,
    "prompt_b": str,
    "frames": int,
    "frame": int,  # make only this frame (0-based): a replay of one frame's PNG
    "noise_seed_b": int,
    "layout_steps": int,
    "hold_common": (int, float),  # fraction of the steps, 0 to 1
}


def check_style_job(job: dict[str, Any]) -> None:
    check_fields(job, "style", STYLE_FIELDS, aliases={"strength": "amount"})
    check_required(job, "style", ("prompt", "style"))
    if job.get("sweep") is not None:
        if job.get("amount") is not None or job.get("strength") is not None:
            raise RetouchError("a style job with a 'sweep' takes no 'amount'")
        if job.get("num_images") not in (None, 1):
            raise RetouchError("a style job with a 'sweep' takes no 'num_images'")
        parse_sweep(job["sweep"])
    if isinstance(job.get("amount"), str) and job["amount"] != "auto":
        raise RetouchError(f"a style job's 'amount' is a number or \"auto\", got {job['amount']!r}")
    if job.get("judge") is not None and job.get("amount") != "auto":
        raise RetouchError('a style job\'s \'judge\' chooses the amount: pass it with "amount": "auto"')


def check_interpolate_job(job: dict[str, Any]) -> None:
    check_fields(job, "interpolate", INTERPOLATE_FIELDS)
    check_required(job, "interpolate", ("prompt_a", "prompt_b"))


def style_task(ctx: TaskContext, job: dict[str, Any]) -> TaskOutput:
    """``{"task": "style", "prompt", "style", "amount", "direction", "seed"}``: one picture at
    style amount ``amount`` (theta; ``"strength"``, its old name, is read too); 0 is the plain
    generation. With ``"sweep": "a:b:n"`` instead of an amount: the grid, plus each amount's
    picture as ``{id}_{k}.png``."""
    check_style_job(job)
    check_model(ctx, job)
    options = {
        "direction": get(job, "direction", DEFAULT_STYLE_DIRECTION),
        "negative_prompt": get(job, "negative_prompt", ""),
        "seed": job.get("seed"),
        "steps": get(job, "steps", DEFAULT_STEPS),
        "guidance_scale": job.get("guidance_scale"),
        "scheduler": get(job, "scheduler", DEFAULT_SCHEDULER),
        "width": job.get("width"),
        "height": job.get("height"),
        "progress": ctx.progress,
    }
    if job.get("sweep") is not None:
        sweep = style_sweep(ctx.model, job["prompt"], job["style"], job["sweep"], **options)
        frames = {
            f"_{k}": (image, recipe)
            for k, (image, recipe) in enumerate(zip(sweep.images, sweep.recipes, strict=True))
        }
        report = {"amounts": sweep.amounts, "seconds_per_image": sweep.seconds}
        return TaskOutput([sweep.grid], [sweep.grid_recipe], sweep.grid_recipe, report, extra_images=frames)

    if job.get("amount") == "auto":
        options |= {"judge": job.get("judge"), "num_images": get(job, "num_images", 1)}
        chosen = stylize_auto(ctx.model, job["prompt"], job["style"], **options)
        return TaskOutput(chosen.images, chosen.recipes, chosen.recipes[0], chosen.report)
    amount = float(style_amount(job.get("amount"), job.get("strength")))
    result = stylize(
        ctx.model, job["prompt"], job["style"], amount, num_images=get(job, "num_images", 1), **options
    )
    return TaskOutput(
        images=result.images,
        recipes=result.recipes,
        recipe={**result.recipes[0], "num_images": len(result.images)},
        report={"seeds": [r["seed"] for r in result.recipes], "seconds_per_image": result.seconds},
    )


def interpolate_task(ctx: TaskContext, job: dict[str, Any]) -> TaskOutput:
    """``{"task": "interpolate", "prompt_a", "prompt_b", "frames", "seed"}``: the contact strip as
    ``{id}.png`` and frame ``k`` as ``{id}_{k}.png``; with ``"frame": k``, that frame alone."""
    check_interpolate_job(job)
    check_model(ctx, job)
    result = interpolate(
        ctx.model,
        prompt_a=job["prompt_a"],
        prompt_b=job["prompt_b"],
        frames=get(job, "frames", DEFAULT_FRAMES),
        seed=job.get("seed"),
        noise_seed_b=job.get("noise_seed_b"),
        layout_steps=get(job, "layout_steps", 0),
        hold_common=get(job, "hold_common", 0.0),
        negative_prompt=get(job, "negative_prompt", ""),
        steps=get(job, "steps", DEFAULT_STEPS),
        guidance_scale=job.get("guidance_scale"),
        scheduler=get(job, "scheduler", DEFAULT_SCHEDULER),
        width=job.get("width"),
        height=job.get("height"),
        frame=job.get("frame"),
        progress=ctx.progress,
    )
    report = {"ts": result.ts, "seconds_per_frame": result.seconds}
    if result.strip is None:  # one frame
        return TaskOutput(result.images, result.recipes, result.recipes[0], report)
    frames = {
        f"_{k}": (image, recipe)
        for k, (image, recipe) in enumerate(zip(result.images, result.recipes, strict=True))
    }
    return TaskOutput([result.strip], [result.strip_recipe], result.strip_recipe, report, extra_images=frames)
