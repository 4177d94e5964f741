"""``instruct``: edit a picture by an instruction ("make the background green"), InstructPix2Pix
(Brooks et al., 2022) through diffusers' own ``StableDiffusionInstructPix2PixPipeline``.

The stages, in order: check the inputs (an instruct model: a UNet with 8 input channels; a
non-empty instruction); prepare (read and convert the input as ``edit`` does, pad it to a size
the model takes); run the pipeline built from the loaded model's components, with the two
guidance scales; with ``preserve``, find where the output differs from the input, snap that to
the object as ``edit`` snaps its masks, and composite the edit onto the input through the
feathered mask, so every pixel beyond it is the input's, bit for bit; report.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline
from PIL import Image
from scipy import ndimage

from retouch.core.components import pipe_name
from retouch.core.latents import pixel_multiple
from retouch.core.limits import check_numbers
from retouch.core.prompts import warn_if_truncated
from retouch.core.schedulers import DEFAULT_STEPS, SchedulerName, make_scheduler
from retouch.core.seeding import MAX_SEED, random_seed
from retouch.edit import masks
from retouch.edit.inputs import ImageInput, read_image
from retouch.edit.layer import DEFAULT_FEATHER_PX, Composited, composite_edit, edit_layer, mask_image
from retouch.edit.result import EditResult, json_safe_metrics
from retouch.errors import RetouchError
from retouch.io.convert import pad_to_multiple
from retouch.io.hashing import pixels_sha256
from retouch.metrics.masked import masked_metrics
from retouch.models.loading import LoadedModel

DEFAULT_IMAGE_GUIDANCE_SCALE = 1.5  # the paper's default
DEFAULT_SCHEDULER: SchedulerName = "euler"
INSTRUCT_CHANNELS = 8  # 4 noisy latents + 4 latents of the input picture
COMPONENTS = ("vae", "text_encoder", "tokenizer", "unet")  # what the pipeline shares with the model
GLOBAL_SHARE = 0.5  # preserve: an object more than this share changed makes a change global,
# unless it moved (mean channel shift) by less than this share of the rest's move: a background
# edit that let the object drift. Chosen on the dev split: background edits' objects drift by
# 0.2-1.0 of the background's shift, global style edits move the object by 0.52 or more.
OBJECT_DRIFT_RATIO = 0.45
__all__ = ["DEFAULT_IMAGE_GUIDANCE_SCALE", "InstructJob", "instruct", "instruct_pipeline", "preserve_mask"]


@dataclass
class InstructJob:
    """One ``instruct`` call's inputs and settings, fixed before any model runs."""

    source: np.ndarray  # (H, W, 3) uint8, the input as RGB
    instruction: str
    negative_prompt: str
    steps: int
    guidance_scale: float
    image_guidance_scale: float
    scheduler: SchedulerName
    seed: int
    preserve: bool
    feather: int
    mask_config: masks.MaskConfig
    progress: bool


def instruct_pipeline(
    model: LoadedModel | StableDiffusionPipeline, scheduler: SchedulerName = DEFAULT_SCHEDULER
) -> StableDiffusionInstructPix2PixPipeline:
    """diffusers' InstructPix2Pix pipeline over ``model``'s own components (no copy of the weights)
    with the sampler ``scheduler``. A ``LoadedModel`` keeps the pipeline for the next call with
    the same sampler, while its components are the ones it was built from.

    Raises:
        RetouchError: the UNet takes 4 input channels (a text-to-image model, not an instruct one).
    """
    pipe = model.pipe if isinstance(model, LoadedModel) else model
    parts = tuple(getattr(pipe, name, None) for name in (*COMPONENTS, "scheduler"))
    kept = model.views.get(("instruct", scheduler)) if isinstance(model, LoadedModel) else None
    if kept is not None and all(a is b for a, b in zip(kept[0], parts, strict=True)):
        return kept[1]
    channels = pipe.unet.config.in_channels
    if channels != INSTRUCT_CHANNELS:
        raise RetouchError(
            f"the model is not an instruct model: its UNet takes {channels} input channels, an InstructPix2Pix "
            f"UNet takes {INSTRUCT_CHANNELS} (the noisy latents and the input's). Pass --model with an "
            "instruct model (the default shapes-64-instruct, or one from `retouch train instruct`)"
        )
    made = StableDiffusionInstructPix2PixPipeline(
        **dict(zip(COMPONENTS, parts[:-1], strict=True)),
        scheduler=make_scheduler(scheduler, pipe.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    made.set_progress_bar_config(disable=True)
    if isinstance(model, LoadedModel):
        model.views[("instruct", scheduler)] = (parts, made)
    return made


def check_instruct_arguments(instruction: str, seed: int, numbers: dict[str, float | int | None]) -> None:
    """Refuse what ``instruct`` cannot run with, naming what to change."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise RetouchError('the instruction is empty; say what to change, e.g. "make the background green"')
    if not 0 <= seed <= MAX_SEED:
        raise RetouchError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    check_numbers(numbers)


def instruct(
    model: LoadedModel | StableDiffusionPipeline,
    image: ImageInput,
    instruction: str,
    *,
    seed: int | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    image_guidance_scale: float | None = None,
    negative_prompt: str = "",
    scheduler: SchedulerName = DEFAULT_SCHEDULER,
    preserve: bool = False,
    feather: int = DEFAULT_FEATHER_PX,
    mask_config: masks.MaskConfig | None = None,
    progress: bool = False,
) -> EditResult:
    """Edit ``image`` as ``instruction`` says, with an InstructPix2Pix model.

    Args:
        model: a ``LoadedModel`` whose UNet takes 8 channels, or a bare diffusers pipeline.
        image: a file path (recorded in the recipe, so the edit replays), a PIL image or an array.
        steps, guidance_scale, image_guidance_scale: the model's ``retouch.json`` when None, else
            25, 7.5 and 1.5. The text guidance pulls towards the instruction, the image guidance
            towards the input picture.
        preserve: keep every pixel the edit did not change: the difference between output and
            input, snapped to the object, is the mask; beyond it and its ``feather`` band the
            result is the input, bit for bit.

    Raises:
        RetouchError: an empty instruction, a model that is not an instruct model, bad numbers.
    """
    start = time.perf_counter()
    # 1. Check the inputs.
    loaded = model if isinstance(model, LoadedModel) else LoadedModel(model, pipe_name(model), "folder")
    pipe = instruct_pipeline(loaded, scheduler)
    seed = random_seed() if seed is None else seed
    steps = int(loaded.defaults.get("steps", DEFAULT_STEPS)) if steps is None else steps
    image_scale = loaded.defaults.get("image_guidance_scale", DEFAULT_IMAGE_GUIDANCE_SCALE)
    image_scale = float(image_scale if image_guidance_scale is None else image_guidance_scale)
    numbers = {"steps": steps, "guidance_scale": guidance_scale, "image_guidance_scale": image_scale,
               "feather": feather}
    check_instruct_arguments(instruction, seed, numbers)
    source_input = read_image(image)
    job = InstructJob(
        source=np.asarray(source_input.image),
        instruction=instruction,
        negative_prompt=negative_prompt,
        steps=steps,
        guidance_scale=loaded.guidance_scale(guidance_scale),
        image_guidance_scale=image_scale,
        scheduler=scheduler,
        seed=seed,
        preserve=preserve,
        feather=feather,
        mask_config=mask_config or masks.MaskConfig(),
        progress=progress,
    )
    warn_if_truncated(pipe.tokenizer, instruction, "instruction")
    # 2. Prepare and 3. run diffusers' pipeline on the padded input, cropped back.
    padded, _ = pad_to_multiple(job.source, pixel_multiple(pipe))
    edited = run_pipeline(pipe, job, padded)[: job.source.shape[0], : job.source.shape[1]]
    edit_seconds = time.perf_counter() - start
    # 4. Preserve: the changed region, snapped, composited onto the input (else the whole picture).
    region, attempt = keep_unchanged(job, edited, pipe.vae_scale_factor)
    # 5. Report.
    timings = {"edit_s": edit_seconds, "total_s": time.perf_counter() - start}
    return EditResult(
        image=Image.fromarray(attempt.output),
        mask=mask_image(attempt.mask),
        layer=edit_layer(attempt.edited, attempt.alpha),
        report=instruct_report(job, attempt, region, source_input.mode, source_input.notes, padded, timings),
        recipe=instruct_recipe(job, loaded, image),
    )


def keep_unchanged(job: InstructJob, edited: np.ndarray, factor: int) -> tuple[str, Composited]:
    """With ``job.preserve``, the edit laid onto the input through ``preserve_mask``; without,
    the pipeline's picture as it is (the region is the whole picture)."""
    if not job.preserve:
        everything = np.ones(job.source.shape[:2], dtype=bool)
        return "global", Composited(edited, edited, everything, everything.astype(np.float64))
    region, mask = preserve_mask(job.source, edited, factor, job.mask_config)
    return region, composite_edit(job.source, edited, mask, job.feather)


@torch.no_grad()
def run_pipeline(pipe: StableDiffusionInstructPix2PixPipeline, job: InstructJob, padded: np.ndarray) -> np.ndarray:
    """diffusers' pipeline from ``job.seed``: (H', W', 3) uint8 at the padded size."""
    pipe.set_progress_bar_config(disable=not job.progress)
    result = pipe(
        prompt=job.instruction,
        image=Image.fromarray(padded),
        num_inference_steps=job.steps,
        guidance_scale=job.guidance_scale,
        image_guidance_scale=job.image_guidance_scale,
        negative_prompt=job.negative_prompt or None,
        generator=torch.Generator("cpu").manual_seed(job.seed),
        output_type="np",
    )
    return (result.images[0] * 255).round().astype(np.uint8)  # as diffusers' numpy_to_pil rounds


def preserve_mask(
    source: np.ndarray, edited: np.ndarray, factor: int, config: masks.MaskConfig | None = None
) -> tuple[str, np.ndarray]:
    """Where ``edited`` changed ``source``, snapped to what the picture draws: (region, (H, W) bool).

    A pixel changed when a channel moved by more than ``change_tau``. Little or no change:
    ``"none"`` and an empty mask. A change that covers most of the picture but leaves the object
    (what stands out from the background) mostly alone, or moves it far less than the rest
    (``OBJECT_DRIFT_RATIO``: the object drifted while the background was repainted):
    ``"background"``, everything but the object (``snap_background``), whose pixels stay the
    input's. One that moves the object as much as the rest: ``"global"``.
    Otherwise ``"foreground"``: the changed latent cells grown to the whole object they touch,
    its bounding box included (a new shape fills another part of the box), then cut to the
    edges of the old and the new object (``refine_mask``).
    """
    config = config or masks.MaskConfig()
    shift = np.abs(source.astype(np.int16) - edited.astype(np.int16)).max(axis=-1)
    changed = ndimage.binary_opening(shift > config.change_tau)  # specks of a pixel or two are VAE noise
    if not changed.any():
        return "none", changed
    coarse = masks.downsample_mask(changed, factor)
    if changed.mean() > GLOBAL_SHARE:
        background = masks.snap_background(masks.downsample_mask(changed, factor, every=True), source, factor, config)
        obj = ~background
        if obj.any() and background.any() and (
            (changed & obj).mean() / obj.mean() < GLOBAL_SHARE  # the object mostly untouched
            or shift[obj].mean() < OBJECT_DRIFT_RATIO * shift[background].mean()  # or it only drifted
        ):
            return "background", background
        return "global", np.ones_like(changed)
    latent = masks.snap_foreground(coarse, source, factor, config, box=True)
    pixels = masks.upsample_mask(latent, factor)[: source.shape[0], : source.shape[1]]
    return "foreground", masks.refine_mask(pixels, source, edited, config)


def instruct_recipe(job: InstructJob, loaded: LoadedModel, image: ImageInput) -> dict[str, Any]:
    """Task ``instruct``: what replays this edit bit for bit."""
    height, width = job.source.shape[:2]
    return {
        "task": "instruct",
        "image": str(Path(image).resolve()) if isinstance(image, str | os.PathLike) else None,
        "image_sha256": pixels_sha256(job.source),
        "instruction": job.instruction,
        "prompt": job.instruction,  # for AUTOMATIC1111's parameters text; not read back
        "negative_prompt": job.negative_prompt,
        "seed": job.seed,
        "steps": job.steps,
        "guidance_scale": job.guidance_scale,
        "image_guidance_scale": job.image_guidance_scale,
        "scheduler": job.scheduler,
        "preserve": job.preserve,
        "feather": job.feather,
        "width": width,
        "height": height,
        **loaded.recipe_fields(),
    }


def instruct_report(
    job: InstructJob,
    attempt: Composited,
    region: str,
    mode: str,
    notes: list[str],
    padded: np.ndarray,
    timings: dict[str, float],
) -> dict[str, Any]:
    """The region kept (with ``preserve``), mask area, settings, timings and masked metrics."""
    height, width = job.source.shape[:2]
    metrics = masked_metrics(job.source, attempt.output, attempt.mask, attempt.alpha > 0)
    warnings = []
    if region == "none":
        warnings.append("the instruction changed no pixel beyond the threshold; the output is the input")
    return {
        "method": "instruct-pix2pix",
        "instruction": job.instruction,
        "preserve": job.preserve,
        "region": region,
        "mask_area": float(attempt.mask.mean()),
        "seed": job.seed,
        "steps": job.steps,
        "guidance_scale": job.guidance_scale,
        "image_guidance_scale": job.image_guidance_scale,
        "input": {"width": width, "height": height, "mode": mode, "notes": notes,
                  "padded_to": [padded.shape[1], padded.shape[0]]},
        "timings": timings,
        "metrics": json_safe_metrics(metrics),
        "warnings": warnings,
    }
