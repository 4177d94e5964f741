"""``edit``: change what two captions differ in, keep everything else.

The steps, in order: read and convert the input; pad it to a size the model takes; build the
mask (DiffEdit's difference map, cut by the region decided from the captions and the map, or the
user's mask); run the method (Blended Latent Diffusion by default) at the strength, or search the
strength; crop back and composite onto the input through a feathered mask; measure.
"""

from __future__ import annotations

import math
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
from retouch.core.prompts import warn_if_truncated
from retouch.core.schedulers import DEFAULT_STEPS, SchedulerName, make_scheduler
from retouch.core.seeding import MAX_SEED, random_seed
from retouch.edit import masks
from retouch.edit.blend import blended_latent_diffusion
from retouch.edit.diffedit import diffedit
from retouch.edit.inpaint import inpaint
from retouch.edit.judge import make_judge
from retouch.edit.layer import DEFAULT_FEATHER_PX, composite, edit_layer, feather_alpha, mask_image
from retouch.edit.llm import llm_region
from retouch.edit.region import (
    RegionDecision,
    caption_region,
    check_captions_differ,
    combine,
    image_evidence,
    is_recolor,
)
from retouch.edit.sdedit import sdedit
from retouch.edit.strength import Judge, search_strength
from retouch.errors import RetouchError
from retouch.io.atomic import atomic_write_json
from retouch.io.convert import InputImage, pad_to_multiple, read_input_image, to_rgb
from retouch.io.hashing import pixels_sha256
from retouch.io.png import save_png
from retouch.metrics.masked import masked_metrics
from retouch.models.loading import LoadedModel

Method = Literal["blend", "sdedit", "inpaint", "diffedit"]
RegionChoice = Literal["auto", "foreground", "background", "global"]
Classifier = Literal["rules", "llm"]
METHODS: tuple[str, ...] = ("blend", "sdedit", "inpaint", "diffedit")
REGION_CHOICES: tuple[str, ...] = ("auto", "foreground", "background", "global")
DEFAULT_STRENGTH = 0.8
DEFAULT_SCHEDULER: SchedulerName = "ddim"  # deterministic steps: the kept region is followed exactly

ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray


OUTPUTS: tuple[str, ...] = ("image", "mask", "layer")


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
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise RetouchError(f"the output must be a .png file (it carries the recipe), got {path}")
        stem = path.with_suffix("")
        targets = {suffix: Path(f"{stem}{suffix}.png") for suffix in self.files()}
        targets[".json"] = Path(f"{stem}.json")
        inputs = {Path(p).resolve() for p in (self.recipe["image"], self.recipe["mask"]) if p}
        for target in targets.values():
            if target.resolve() in inputs:
                raise RetouchError(f"refusing to overwrite the input {target}; choose another --output")
        for suffix, (picture, recipe) in self.files().items():
            save_png(picture, targets[suffix], recipe)
        atomic_write_json(targets[".json"], self.report)
        return targets


@dataclass
class _Attempt:
    output: np.ndarray  # (H, W, 3) uint8, composited onto the input
    edited: np.ndarray  # (H, W, 3) uint8, the method's own pixels
    mask: np.ndarray  # (H, W) bool
    alpha: np.ndarray  # (H, W) float, the feathered mask


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
    progress: bool = False,
) -> EditResult:
    """Edit ``image`` from ``source_prompt`` (what it shows) to ``target_prompt`` (what is wanted).

    Args:
        model: a ``LoadedModel`` from ``load_model``, or a bare diffusers pipeline.
        image: a file path (recorded in the recipe, so the edit replays), a PIL image or an array.
        method: ``blend`` (automatic mask + Blended Latent Diffusion), ``sdedit`` (whole picture),
            ``inpaint`` (needs ``mask``), ``diffedit`` (diffusers' DiffEdit pipeline).
        region: ``auto`` decides from the captions and the image; the others override it.
        mask: white = edit; overrides the automatic mask.
        strength: in (0, 1], or ``"auto"``: the smallest strength at which ``judge`` says the edit took.
        judge: for ``strength="auto"``: ``"oracle"`` (shapes-64), a CLIP folder, or a function
            ``image -> (score, took)``; the oracle by default when both captions are canonical.
        classifier: ``rules`` (caption diff) or ``llm`` (an OpenAI-compatible endpoint at ``llm_url``).
        mask_config: the automatic mask's settings (``MaskConfig()`` when None).
        feather: pixels over which the composite fades from the edit to the input outside the mask.

    Raises:
        RetouchError: bad input, identical captions, or a region that cannot be decided.
    """
    start = time.perf_counter()
    loaded = model if isinstance(model, LoadedModel) else LoadedModel(model, pipe_name(model), "folder")
    pipe = loaded.pipe
    guidance_scale = loaded.guidance_scale(guidance_scale)
    seed = random_seed() if seed is None else seed
    mask_config = mask_config or masks.MaskConfig()
    check_generate_arguments(method, region, strength, seed, steps, classifier, llm_url, mask)
    source_input = read_input_image(image) if isinstance(image, str | os.PathLike) else _as_input(image)
    source = np.asarray(source_input.image)  # (H, W, 3) uint8
    height, width = source.shape[:2]
    user_mask = _user_mask(mask, (width, height))
    if user_mask is None and method == "inpaint":
        raise RetouchError("--method inpaint needs --mask PNG (white = edit)")
    automatic = user_mask is None and method == "blend" and region != "global"
    if automatic or method == "diffedit":
        check_captions_differ(source_prompt, target_prompt)
    for what, prompt in (("source caption", source_prompt), ("target caption", target_prompt)):
        warn_if_truncated(pipe.tokenizer, prompt, what)

    padded, _ = pad_to_multiple(source, pixel_multiple(pipe))  # (H', W', 3), cropped back below
    factor = pipe.vae_scale_factor

    # 1. The mask, and the region it stands for.
    early_mask = None  # background edits: the latent mask while the layout forms (see blend)
    if method in ("blend", "inpaint"):
        latents = encode(pipe, padded)  # (1, 4, h, w), shared by the map and every strength tried
        target_embeds, negative_embeds = text_embeddings(pipe, target_prompt, guidance_scale)
    if user_mask is not None:
        decision = RegionDecision("mask", 1.0, {"mask": "given"})
        pixel_mask = np.pad(user_mask, ((0, padded.shape[0] - height), (0, padded.shape[1] - width)))
    elif method == "sdedit":
        decision = RegionDecision("global", 1.0, {"method": "sdedit: the whole picture"})
    elif method == "diffedit":
        decision = RegionDecision("mask", 1.0, {"mask": "DiffEdit's own (diffusers generate_mask)"})
    elif region == "global":
        decision = RegionDecision("global", 1.0, {"given": "region"})
        latent_mask = np.ones(latents.shape[-2:], dtype=bool)
        pixel_mask = masks.upsample_mask(latent_mask, factor)
    else:
        decision, latent_mask = _automatic_mask(
            pipe, latents, source_prompt, target_prompt, target_embeds, region, classifier, llm_url,
            _generator(seed), mask_config,
        )  # fmt: skip
        # a foreground mask is refined to the object's edges after the edit (refine_mask)
        pixel_mask, latent_mask, early_mask = masks.snap_to_object(
            latent_mask, decision.region, padded, factor, mask_config
        )
    recolor = is_recolor(source_prompt, target_prompt)  # the object keeps its outline
    hold = {"early_mask": early_mask, "early_fraction": mask_config.hold_fraction} if early_mask is not None else {}
    mask_seconds = time.perf_counter() - start

    # 2. The edit at one strength: the method's pixels and the mask they are composited through.
    def run(strength: float) -> _Attempt:
        generator = _generator(seed)  # every strength tried starts from the same noise
        new_scheduler = make_scheduler(scheduler, pipe.scheduler.config)
        if method == "sdedit":
            edited = sdedit(
                pipe, padded, target_prompt, new_scheduler, strength, steps, guidance_scale,
                generator, progress,
            )  # fmt: skip
            return _finish(source, edited, np.ones(padded.shape[:2], dtype=bool), height, width, feather)
        if method == "diffedit":
            edited, diffedit_mask = diffedit(
                pipe, padded, source_prompt, target_prompt, strength, steps, guidance_scale,
                generator, mask_config, progress,
            )  # fmt: skip
            return _finish(source, edited, masks.upsample_mask(diffedit_mask, factor), height, width, feather)
        if user_mask is not None:  # the user's mask, with method blend or inpaint alike
            z = inpaint(
                pipe, latents, pixel_mask, target_embeds, negative_embeds, new_scheduler,
                strength, steps, guidance_scale, generator, progress,
            )  # fmt: skip
            return _finish(source, decode(pipe, z), pixel_mask, height, width, feather)
        z = blended_latent_diffusion(
            pipe, latents, latent_mask, target_embeds, negative_embeds, new_scheduler,
            strength, steps, guidance_scale, generator, progress, **hold,
        )  # fmt: skip
        edited = decode(pipe, z)  # (H', W', 3)
        final = pixel_mask
        if decision.region == "foreground":  # snapped to the old and the new object's edges
            final = masks.refine_mask(pixel_mask, padded, edited, mask_config, keep_outline=recolor)
        return _finish(source, edited, final, height, width, feather)

    trace = None
    if strength == "auto":
        judge_fn = make_judge(judge, source_prompt, target_prompt, pipe.device)
        strength, attempt, trials = search_strength(run, lambda a: judge_fn(Image.fromarray(a.output)), steps)
        trace = [t.to_dict() for t in trials]
    else:
        attempt = run(float(strength))
    total_seconds = time.perf_counter() - start

    recipe = {
        "task": "edit",
        "image": str(Path(image).resolve()) if isinstance(image, str | os.PathLike) else None,
        "image_sha256": pixels_sha256(source),
        "source": source_prompt,
        "target": target_prompt,
        "prompt": target_prompt,  # for AUTOMATIC1111's parameters text; not read back
        "method": method,
        # the decision itself, so a replay needs neither the classifier nor its endpoint
        "region": decision.region if automatic else region,
        "mask": str(Path(mask).resolve()) if isinstance(mask, str | os.PathLike) else None,
        "strength": strength,
        "seed": seed,
        "steps": steps,
        "guidance_scale": guidance_scale,
        "scheduler": scheduler,
        "width": width,
        "height": height,
        **loaded.recipe_fields(),
    }
    report = {
        "method": method,
        "region": decision.region,
        "region_confidence": decision.confidence,
        "region_evidence": decision.evidence,
        "mask_area": float(attempt.mask.mean()),
        "strength": strength,
        "strength_search": trace,
        "seed": seed,
        "input": {
            "width": width,
            "height": height,
            "mode": source_input.mode,
            "notes": source_input.notes,
            "padded_to": [padded.shape[1], padded.shape[0]],
        },
        "timings": {
            "mask_s": mask_seconds,
            "edit_s": total_seconds - mask_seconds,
            "total_s": total_seconds,
        },
        # inside the mask; in its feather band (blended); outside both (the input, bit for bit)
        "metrics": json_safe_metrics(masked_metrics(source, attempt.output, attempt.mask, attempt.alpha > 0)),
    }
    return EditResult(
        image=Image.fromarray(attempt.output),
        mask=mask_image(attempt.mask),
        layer=edit_layer(attempt.edited, attempt.alpha),
        report=report,
        recipe=recipe,
    )


def _automatic_mask(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    source_prompt: str,
    target_prompt: str,
    target_embeds: torch.Tensor,
    region: RegionChoice,
    classifier: Classifier,
    llm_url: str | None,
    generator: torch.Generator,
    config: masks.MaskConfig,
) -> tuple[RegionDecision, np.ndarray]:
    """DiffEdit's difference map; the region, decided from the captions and the map (or given);
    the map cut by that region: the decision and the (h, w) bool latent mask."""
    source_embeds, _ = text_embeddings(pipe, source_prompt, 1.0)
    raw = masks.difference_map(pipe, latents, source_embeds, target_embeds, generator, config)  # (h, w)
    normalized = masks.normalize_map(raw, config)
    if region == "auto":
        guess = (
            llm_region(source_prompt, target_prompt, llm_url)
            if classifier == "llm"
            else caption_region(source_prompt, target_prompt)
        )
        decision = combine(guess, image_evidence(normalized))
    else:
        decision = RegionDecision(region, 1.0, {"given": "region"})
    latent_mask = masks.region_mask(normalized, decision.region, config)
    if not latent_mask.any():
        raise RetouchError(
            "the automatic mask is empty: the model sees no difference between the captions; "
            "pass --mask PNG or --region global"
        )
    return decision, latent_mask


def _finish(
    source: np.ndarray, edited: np.ndarray, mask: np.ndarray, height: int, width: int, feather: int
) -> _Attempt:
    """Crop the padding off; the input outside mask + feather band, bit for bit; the edit inside."""
    edited, mask = edited[:height, :width], mask[:height, :width]
    alpha = feather_alpha(mask, feather)
    return _Attempt(composite(source, edited, alpha), edited, mask, alpha)


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


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def _as_input(image: Image.Image | np.ndarray) -> InputImage:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise RetouchError(f"image must be a file path, a PIL image or an array, got {type(image).__name__}")
    return to_rgb(image)


def _user_mask(mask: ImageInput | None, size: tuple[int, int]) -> np.ndarray | None:
    if mask is None:
        return None
    if isinstance(mask, str | os.PathLike):
        return masks.read_mask(mask, size)
    values = masks.mask_from_image(mask)
    if values.shape != (size[1], size[0]):
        raise RetouchError(f"the mask is {values.shape[1]}x{values.shape[0]} but the image is {size[0]}x{size[1]}")
    return values


def check_generate_arguments(
    method: str,
    region: str,
    strength: float | str,
    seed: int,
    steps: int,
    classifier: str,
    llm_url: str | None,
    mask: Any,
) -> None:
    if method not in METHODS:
        raise RetouchError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if region not in REGION_CHOICES:
        raise RetouchError(f"unknown region {region!r}; choose one of: {', '.join(REGION_CHOICES)}")
    if strength != "auto" and (
        isinstance(strength, bool) or not isinstance(strength, int | float) or not 0 < strength <= 1
    ):
        raise RetouchError(f"strength must be in (0, 1] or 'auto', got {strength!r}")
    if not 0 <= seed <= MAX_SEED:
        raise RetouchError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    if steps < 1:
        raise RetouchError(f"steps must be at least 1, got {steps}")
    if classifier not in ("rules", "llm"):
        raise RetouchError(f"unknown classifier {classifier!r}; choose rules or llm")
    if classifier == "llm" and not llm_url:
        raise RetouchError("--classifier llm needs --llm-url URL (an OpenAI-compatible endpoint)")
    if mask is not None and method in ("sdedit", "diffedit"):
        raise RetouchError(f"--method {method} makes its own mask (or none); drop --mask or use --method inpaint")
