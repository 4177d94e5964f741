"""``edit``: change what two captions differ in, keep everything else.

The stages, in order: check the inputs; prepare (read and convert the input, pad it to a size the
model takes, encode it, and find the region: DiffEdit's difference map cut by the region decided
from the captions and the map, the whole picture, or the user's mask); run the method (Blended
Latent Diffusion by default) at the strength, or search the smallest strength that takes; crop
back and composite onto the input through a feathered mask; report.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from retouch.core.components import pipe_name
from retouch.core.latents import decode, encode, pixel_multiple, text_embeddings
from retouch.core.prompts import warn_if_truncated, warn_if_unknown_tokens
from retouch.core.schedulers import DEFAULT_STEPS, SchedulerName, make_scheduler
from retouch.core.seeding import random_seed
from retouch.edit import masks
from retouch.edit.diffedit import diffedit
from retouch.edit.inpaint import inpaint
from retouch.edit.inputs import (
    METHODS,
    REGION_CHOICES,
    ImageInput,
    check_edit_arguments,
    check_edit_text,
    read_image,
    read_user_mask,
)
from retouch.edit.judge import JudgeSpec, make_judge
from retouch.edit.layer import DEFAULT_FEATHER_PX, Composited, composite_edit, edit_layer, mask_image
from retouch.edit.region import RegionDecision, check_captions_differ
from retouch.edit.region_pipeline import (
    Classifier,
    EditRegion,
    RegionChoice,
    find_edit_region,
    sample_in_region,
    whole_picture,
)
from retouch.edit.result import OUTPUTS, EditResult, json_safe_metrics
from retouch.edit.sdedit import sdedit
from retouch.edit.strength import Judge, search_strength
from retouch.edit.tries import best_of, resolve_tries
from retouch.errors import RetouchError
from retouch.io.convert import InputImage, pad_to_multiple
from retouch.io.hashing import pixels_sha256
from retouch.metrics.masked import masked_metrics
from retouch.models.loading import LoadedModel

Method = Literal["blend", "sdedit", "inpaint", "diffedit"]
DEFAULT_STRENGTH = 0.8
DEFAULT_SCHEDULER: SchedulerName = "ddim"  # deterministic steps: the kept region is followed exactly
check_generate_arguments = check_edit_arguments  # the old name
__all__ = ["DEFAULT_STEPS", "METHODS", "OUTPUTS", "REGION_CHOICES", "EditResult", "edit", "json_safe_metrics"]


@dataclass
class EditJob:
    """One ``edit`` call's inputs and settings, fixed before any model runs."""

    pipe: StableDiffusionPipeline
    source: np.ndarray  # (H, W, 3) uint8, the input as RGB
    user_mask: np.ndarray | None  # (H, W) bool, the given mask (True = edit), or None
    source_prompt: str
    target_prompt: str
    method: Method
    region: RegionChoice
    classifier: Classifier
    llm_url: str | None
    scheduler: SchedulerName
    steps: int
    guidance_scale: float
    seed: int
    mask_config: masks.MaskConfig
    feather: int  # px over which the composite fades from the edit to the input
    progress: bool


@dataclass
class Prepared:
    """What every strength tried shares: the padded input, its latents, the target's embeddings
    and the region (computed once)."""

    padded: np.ndarray  # (H', W', 3) uint8: the input, padded to a size the model takes
    decision: RegionDecision  # the region (or "mask") and why, for the report
    found: EditRegion | None  # blend's region (automatic, or the whole picture); None otherwise
    pixel_mask: np.ndarray | None  # (H', W') bool, the user's mask padded, for inpainting
    latents: torch.Tensor | None = None  # (1, 4, h, w), blend and inpaint
    target_embeds: torch.Tensor | None = None  # (1, tokens, dim)
    negative_embeds: torch.Tensor | None = None  # (1, tokens, dim), the empty prompt's


def edit(
    model: LoadedModel | StableDiffusionPipeline,
    image: ImageInput,
    source_prompt: str,
    target_prompt: str,
    *,
    method: Method = "blend",
    region: RegionChoice = "auto",
    mask: ImageInput | None = None,
    strength: float | Literal["auto"] = DEFAULT_STRENGTH,
    seed: int | None = None,
    steps: int = DEFAULT_STEPS,
    guidance_scale: float | None = None,
    scheduler: SchedulerName = DEFAULT_SCHEDULER,
    judge: str | os.PathLike[str] | Judge | None = None,
    classifier: Classifier = "rules",
    llm_url: str | None = None,
    mask_config: masks.MaskConfig | None = None,
    feather: int = DEFAULT_FEATHER_PX,
    tries: int | Literal["auto"] = "auto",
    progress: bool = False,
) -> EditResult:
    """Edit ``image`` from ``source_prompt`` (what it shows) to ``target_prompt`` (what is wanted).

    Args:
        model: a ``LoadedModel`` from ``load_model``, or a bare diffusers pipeline.
        image: a file path (recorded in the recipe, so the edit replays), a PIL image or an array.
        method: ``blend`` (automatic mask + Blended Latent Diffusion), ``sdedit`` (whole picture),
            ``inpaint`` (needs ``mask``), ``diffedit`` (diffusers' DiffEdit pipeline).
        region: ``auto`` decides from the captions and the image; the others override it. mask: white = edit.
        strength: img2img noise level in (0, 1], or ``"auto"``: the smallest at which ``judge`` (``"oracle"``,
            a CLIP folder, ``image -> (score, took)``; a world's oracle by default) says the edit took.
        classifier: ``rules`` (caption diff) or ``llm`` (an OpenAI-compatible endpoint at ``llm_url``).
        mask_config: the automatic mask's settings. feather: px over which the edit fades into the input.
        tries: at most this many seeds while ``judge`` rejects the edit; ``"auto"``: see ``edit.tries``.

    Raises:
        RetouchError: bad input, identical captions, or a region that cannot be decided.
    """
    start = time.perf_counter()
    # 1. Check the inputs.
    loaded = model if isinstance(model, LoadedModel) else LoadedModel(model, pipe_name(model), "folder")
    seed, guidance_scale = random_seed() if seed is None else seed, loaded.guidance_scale(guidance_scale)
    check_edit_arguments(method, region, strength, seed, steps, classifier, llm_url, mask, guidance_scale, tries)
    check_edit_text(target_prompt, judge, mask, region)  # an empty caption, a --judge typo
    source_input = read_image(image)
    tries = resolve_tries(tries, judge, target_prompt, np.asarray(source_input.image))
    job = EditJob(
        pipe=loaded.pipe,
        source=np.asarray(source_input.image),  # (H, W, 3) uint8
        user_mask=read_user_mask(mask, source_input.image.size),
        source_prompt=source_prompt,
        target_prompt=target_prompt,
        method=method,
        region=region,
        classifier=classifier,
        llm_url=llm_url,
        scheduler=scheduler,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
        mask_config=mask_config or masks.MaskConfig(),
        feather=feather,
        progress=progress,
    )
    check_prompts(job)
    # 2. Prepare: pad, encode, and find the region (once for every strength tried).
    prepared = prepare(job)
    mask_seconds = time.perf_counter() - start
    # 3. Run the method at the strength, or search the smallest that takes (then more seeds: tries).
    job, prepared, strength, attempt, search = run_tries(job, prepared, strength, judge, tries)
    # 4. Report.
    timings = {"mask_s": mask_seconds, "total_s": time.perf_counter() - start}
    return EditResult(
        image=Image.fromarray(attempt.output),
        mask=mask_image(attempt.mask),
        layer=edit_layer(attempt.edited, attempt.alpha),
        report=edit_report(job, prepared, attempt, source_input, strength=strength, search=search, timings=timings),
        recipe=edit_recipe(job, prepared, loaded, image=image, mask=mask, strength=strength),
    )


def is_automatic(job: EditJob) -> bool:
    """Blend with no mask given and no global region: the region comes from the captions and the map."""
    return job.user_mask is None and job.method == "blend" and job.region != "global"


def check_prompts(job: EditJob) -> None:
    """Inpainting needs a mask; an automatic region or DiffEdit needs captions that differ; a
    caption longer than the text encoder reads is warned about."""
    if job.user_mask is None and job.method == "inpaint":
        raise RetouchError("--method inpaint needs --mask PNG (white = edit)")
    if is_automatic(job) or job.method == "diffedit":
        check_captions_differ(job.source_prompt, job.target_prompt)
    for what, prompt in (("source caption", job.source_prompt), ("target caption", job.target_prompt)):
        warn_if_truncated(job.pipe.tokenizer, prompt, what)
        warn_if_unknown_tokens(job.pipe.tokenizer, prompt, what)


def prepare(job: EditJob) -> Prepared:
    """Pad the input; for blend and inpaint, its latents and the target's embeddings; the region."""
    pipe, (height, width) = job.pipe, job.source.shape[:2]
    padded, _ = pad_to_multiple(job.source, pixel_multiple(pipe))  # (H', W', 3), cropped back at the end
    prepared = Prepared(padded, fixed_decision(job), found=None, pixel_mask=None)
    if job.user_mask is not None:
        prepared.pixel_mask = np.pad(job.user_mask, ((0, padded.shape[0] - height), (0, padded.shape[1] - width)))
    if job.method in ("blend", "inpaint"):
        prepared.latents = encode(pipe, padded)  # (1, 4, h, w), shared by the map and every strength
        prepared.target_embeds, prepared.negative_embeds = text_embeddings(
            pipe, job.target_prompt, job.guidance_scale
        )
    if job.method == "blend" and job.user_mask is None:
        prepared.found = find_blend_region(job, prepared)
        prepared.decision = prepared.found.decision
    return prepared


def fixed_decision(job: EditJob) -> RegionDecision:
    """The region a given mask, or a method that makes its own, stands for (blend's is found later)."""
    if job.user_mask is not None:
        return RegionDecision("mask", 1.0, {"mask": "given"})
    if job.method == "sdedit":
        return RegionDecision("global", 1.0, {"method": "sdedit: the whole picture"})
    if job.method == "diffedit":
        return RegionDecision("mask", 1.0, {"mask": "DiffEdit's own (diffusers generate_mask)"})
    return RegionDecision("global", 1.0, {"given": "region"})


def find_blend_region(job: EditJob, prepared: Prepared) -> EditRegion:
    """The whole picture for ``region="global"``; else the region pipeline's region, decided from
    the captions and the map (or given) and snapped to the object."""
    if job.region == "global":
        return whole_picture(prepared.latents, job.pipe.vae_scale_factor, {"given": "region"})
    source_embeds, _ = text_embeddings(job.pipe, job.source_prompt, 1.0)
    return find_edit_region(
        job.pipe,
        prepared.latents,
        prepared.padded,
        source_embeds,
        prepared.target_embeds,
        source=job.source_prompt,
        target=job.target_prompt,
        seed=job.seed,
        region=job.region,
        classifier=job.classifier,
        llm_url=job.llm_url,
        config=job.mask_config,
    )


def run_tries(
    job: EditJob, prepared: Prepared, strength: float | Literal["auto"], judge: JudgeSpec, tries: int
) -> tuple[EditJob, Prepared, float, Composited, dict[str, list[dict[str, Any]] | None]]:
    """``run_at_strength`` from ``job.seed``; with ``tries`` > 1, whole edits from the next seeds
    too (the map's draws included, so each is the edit its seed replays) while the judge rejects
    the edit: (the job with the seed kept, its preparation, strength, edit, the strength search's
    and the tries' traces for the report)."""
    if tries == 1:
        found, attempt, trace = run_at_strength(job, prepared, strength, judge)
        return job, prepared, found, attempt, {"strength_search": trace, "tries": None}
    judge_fn = make_judge(judge, job.source_prompt, job.target_prompt, job.pipe.device, reference=job.source)

    def run(seed: int) -> tuple[EditJob, Prepared, float, Composited, list[dict[str, Any]] | None]:
        seeded = dataclasses.replace(job, seed=seed)
        ready = prepared if seed == job.seed else prepare(seeded)
        return seeded, ready, *run_at_strength(seeded, ready, strength, judge_fn)

    _, (seeded, ready, found, attempt, trace), trials = best_of(
        run, lambda result: judge_fn(Image.fromarray(result[3].output)), job.seed, tries
    )
    return seeded, ready, found, attempt, {"strength_search": trace, "tries": [t.to_dict() for t in trials]}


def run_at_strength(
    job: EditJob, prepared: Prepared, strength: float | Literal["auto"], judge: str | os.PathLike[str] | Judge | None
) -> tuple[float, Composited, list[dict[str, Any]] | None]:
    """The method at ``strength``; or, for ``"auto"``, bisected to the smallest strength at which
    ``judge`` says the edit took: (strength, the edit, the search's trace or None)."""
    run = functools.partial(run_once, job, prepared)
    if strength != "auto":
        return strength, run(float(strength)), None
    judge_fn = make_judge(judge, job.source_prompt, job.target_prompt, job.pipe.device, reference=job.source)
    found, attempt, trials = search_strength(run, lambda a: judge_fn(Image.fromarray(a.output)), job.steps)
    return found, attempt, [t.to_dict() for t in trials]


def run_once(job: EditJob, prepared: Prepared, strength: float) -> Composited:
    """The method at one ``strength``, composited onto the input; every strength tried starts
    from the same noise (``job.seed``)."""
    pipe, padded, feather = job.pipe, prepared.padded, job.feather
    denoise = {"strength": strength, "steps": job.steps, "guidance_scale": job.guidance_scale, "progress": job.progress}
    if prepared.found is not None:
        return sample_in_region(
            pipe,
            prepared.latents,
            prepared.found,
            prepared.target_embeds,
            prepared.negative_embeds,
            picture=padded,
            background=job.source,
            scheduler=job.scheduler,
            seed=job.seed,
            config=job.mask_config,
            feather=feather,
            **denoise,
        )
    denoise["generator"] = torch.Generator("cpu").manual_seed(job.seed)
    if job.method == "diffedit":
        edited, latent_mask = diffedit(
            pipe, padded, job.source_prompt, job.target_prompt, config=job.mask_config, **denoise
        )
        return composite_edit(job.source, edited, masks.upsample_mask(latent_mask, pipe.vae_scale_factor), feather)
    scheduler = make_scheduler(job.scheduler, pipe.scheduler.config)
    if job.method == "sdedit":
        edited = sdedit(pipe, padded, job.target_prompt, scheduler, **denoise)
        return composite_edit(job.source, edited, np.ones(padded.shape[:2], dtype=bool), feather)
    latents, mask = prepared.latents, prepared.pixel_mask  # the user's mask, with blend or inpaint alike
    z = inpaint(pipe, latents, mask, prepared.target_embeds, prepared.negative_embeds, scheduler, **denoise)
    return composite_edit(job.source, decode(pipe, z), mask, feather)


def edit_recipe(
    job: EditJob,
    prepared: Prepared,
    loaded: LoadedModel,
    *,
    image: ImageInput,
    mask: ImageInput | None,
    strength: float,
) -> dict[str, Any]:
    """Task ``edit``: what replays this edit bit for bit, with no classifier nor its endpoint."""
    height, width = job.source.shape[:2]
    return {
        "task": "edit",
        "image": str(Path(image).resolve()) if isinstance(image, str | os.PathLike) else None,
        "image_sha256": pixels_sha256(job.source),
        "source": job.source_prompt,
        "target": job.target_prompt,
        "prompt": job.target_prompt,  # for AUTOMATIC1111's parameters text; not read back
        "method": job.method,
        "region": prepared.decision.region if is_automatic(job) else job.region,  # the decision itself
        "mask": str(Path(mask).resolve()) if isinstance(mask, str | os.PathLike) else None,
        "strength": strength,
        "seed": job.seed,
        "tries": 1,  # the seed kept: a replay draws that one edit, whatever the tries were
        "steps": job.steps,
        "guidance_scale": job.guidance_scale,
        "scheduler": job.scheduler,
        "width": width,
        "height": height,
        **loaded.recipe_fields(),
    }


def edit_report(
    job: EditJob,
    prepared: Prepared,
    attempt: Composited,
    source_input: InputImage,
    *,
    strength: float,
    search: dict[str, list[dict[str, Any]] | None],
    timings: dict[str, float],
) -> dict[str, Any]:
    """The region decision, mask area, strength (and the searches: strength, tries), timings and
    masked metrics."""
    height, width = job.source.shape[:2]
    decision = prepared.decision
    # inside the mask; in its feather band (blended); outside both (the input, bit for bit)
    metrics = masked_metrics(job.source, attempt.output, attempt.mask, attempt.alpha > 0)
    return {
        "method": job.method,
        "region": decision.region,
        "region_confidence": decision.confidence,
        "region_evidence": decision.evidence,
        "mask_area": float(attempt.mask.mean()),
        "strength": strength,
        "strength_search": search["strength_search"],
        "seed": job.seed,
        "tries": search["tries"],
        "input": {
            "width": width,
            "height": height,
            "mode": source_input.mode,
            "notes": source_input.notes,
            "padded_to": [prepared.padded.shape[1], prepared.padded.shape[0]],
        },
        "timings": {"mask_s": timings["mask_s"], "edit_s": timings["total_s"] - timings["mask_s"], **timings},
        "metrics": json_safe_metrics(metrics),
        "warnings": mask_warnings(decision.region, job.source, attempt),
    }


def mask_warnings(region: str, source: np.ndarray, attempt: Composited) -> list[str]:
    """A foreground mask much larger than the objects it holds makes "outside the mask" say
    little: the background inside it may have changed unmeasured."""
    if region != "foreground":
        return []
    area = int(attempt.mask.sum())
    objects = masks.object_area(source, attempt.output, attempt.mask)
    if area <= 2 * max(objects, 1):
        return []
    return [
        f"the mask ({area} px) is more than twice the objects it holds ({objects} px): the figures "
        "outside it leave out background pixels the edit may have changed"
    ]
