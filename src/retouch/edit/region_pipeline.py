"""The one region pipeline: where an edit redraws, and the redraw inside it.

``find_edit_region`` turns a picture and what two captions (or their embeddings) say about it
into an ``EditRegion``, in named stages:

1. the map: DiffEdit's ``mean |eps(target) - eps(source)|`` (``masks.difference_map``), rescaled
   and smoothed (``masks.normalize_map``);
2. the decision: the region the captions name, weighed with where the map's mass sits
   (``decide_region``), or the one the caller gives;
3. the cut: the map cut by that region (``masks.region_mask``), refused when empty;
4. the snap: the cut grown or trimmed to the object the picture draws (``masks.snap_to_object``);
   unless the captions only recolour it, a foreground mask covers the object's bounding box, where
   any new shape of its size goes.

``sample_in_region`` redraws inside an ``EditRegion``: Blended Latent Diffusion (``blend``), the
decode, a foreground mask refined to the old and the new object's edges (``masks.refine_mask``),
and the composite onto the input through a feathered mask (``layer.composite_edit``).

``edit``, Imagic's local stage C (``imagic_region``) and interpolate's held region
(``steer.hold``) all call these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from retouch.core.latents import decode
from retouch.core.schedulers import SchedulerName, make_scheduler
from retouch.core.world import Region
from retouch.edit import masks
from retouch.edit.blend import blended_latent_diffusion
from retouch.edit.layer import DEFAULT_FEATHER_PX, Composited, composite_edit
from retouch.edit.llm import llm_region
from retouch.edit.region import (
    Lacking,
    RegionDecision,
    caption_region,
    combine,
    image_evidence,
    is_recolor,
    picture_changes,
    picture_region,
)
from retouch.errors import RetouchError

RegionChoice = Literal["auto", "foreground", "background", "global"]
Classifier = Literal["rules", "llm"]
NO_DIFFERENCE = "the model sees no difference between the captions; pass --mask PNG or --region global"


@dataclass
class EditRegion:
    """Where an edit redraws, why, and the masks that say so (True = redrawn)."""

    region: Region  # foreground, background or global
    confidence: float  # in [0, 1]; 1.0 when the caller named the region
    evidence: dict[str, Any]  # what the captions and the map each said
    pixel_mask: np.ndarray  # (H', W') bool, the size of the picture the map was taken on
    latent_mask: np.ndarray  # (h, w) bool
    keep_object_mask: np.ndarray  # (h, w) bool: the latent mask for blend's first keep_object_fraction steps
    recolor: bool  # the captions change only the colour: the object keeps its outline

    @property
    def decision(self) -> RegionDecision:
        """The region, its confidence and its evidence, as ``region.combine`` reports them."""
        return RegionDecision(self.region, self.confidence, self.evidence)

    @property
    def early_mask(self) -> np.ndarray:
        """The old name of ``keep_object_mask``."""
        return self.keep_object_mask


@torch.no_grad()
def find_edit_region(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    picture: np.ndarray,
    source_embeds: torch.Tensor,
    target_embeds: torch.Tensor,
    *,
    source: str | None,
    target: str,
    seed: int,
    region: RegionChoice = "auto",
    classifier: Classifier = "rules",
    llm_url: str | None = None,
    config: masks.MaskConfig | None = None,
    if_empty: str | None = NO_DIFFERENCE,
) -> EditRegion:
    """The region an edit from ``source`` to ``target`` redraws in ``picture``.

    Args:
        latents: (1, 4, h, w), the latents of ``picture`` (H', W', 3) uint8.
        source_embeds, target_embeds: (1, tokens, dim), the conditional embeddings the map
            compares (Imagic passes its optimized embedding as the source).
        source: the source caption, or None: the map alone decides an ``"auto"`` region.
        seed: the map's noise draws.
        region: ``"auto"`` decides from the captions and the map; the others are taken as given.
        classifier: for ``"auto"``: caption word rules, or an LLM at ``llm_url``.
        if_empty: what the error says when the cut is empty, or None to snap it all the same.

    Raises:
        RetouchError: the region cannot be decided, or (with ``if_empty``) the cut is empty.
    """
    config = config or masks.MaskConfig()
    normalized = difference(pipe, latents, source_embeds, target_embeds, seed, config)  # (h, w)
    lacking = picture_changes(picture, target) if source is None else None  # the oracle's reading, for a caption
    decision = decide_region(normalized, source, target, region, classifier, llm_url, lacking)
    coarse = masks.region_mask(normalized, decision.region, config)  # (h, w)
    if if_empty is not None and not coarse.any():
        raise RetouchError(f"the automatic mask is empty: {if_empty}")
    recolor = is_recolor(source, target) if source is not None else lacking is not None and lacking[1] == ["color"]
    pixel, latent, keep_object = masks.snap_to_object(
        coarse, decision.region, picture, pipe.vae_scale_factor, config, box=not recolor
    )
    return EditRegion(
        region=decision.region,
        confidence=decision.confidence,
        evidence=decision.evidence,
        pixel_mask=pixel,
        latent_mask=latent,
        keep_object_mask=keep_object,
        recolor=recolor,
    )


def whole_picture(latents: torch.Tensor, factor: int, evidence: dict[str, Any]) -> EditRegion:
    """The region of a global edit: every latent cell of ``latents`` (1, 4, h, w) and every pixel."""
    latent = np.ones(latents.shape[-2:], dtype=bool)  # (h, w)
    pixel = masks.upsample_mask(latent, factor)
    return EditRegion("global", 1.0, evidence, pixel, latent, latent, recolor=False)


def difference(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    source_embeds: torch.Tensor,
    target_embeds: torch.Tensor,
    seed: int,
    config: masks.MaskConfig,
) -> np.ndarray:
    """DiffEdit's map, normalized: (h, w) float in [0, 1], high where the embeddings disagree."""
    dtype = pipe.unet.dtype
    generator = torch.Generator("cpu").manual_seed(seed)
    raw = masks.difference_map(
        pipe, latents.to(dtype), source_embeds.to(dtype), target_embeds.to(dtype), generator, config
    )  # (h, w)
    return masks.normalize_map(raw, config)


def decide_region(
    normalized: np.ndarray,
    source: str | None,
    target: str,
    region: RegionChoice = "auto",
    classifier: Classifier = "rules",
    llm_url: str | None = None,
    lacking: Lacking | None = None,
) -> RegionDecision:
    """The region to redraw: the given one; or, for ``"auto"``, the captions' region weighed
    with the map's (``region.combine``). With no source caption: the region of the fields the
    picture lacks (``lacking``, from ``region.picture_changes``), else the map's alone.

    Raises:
        RetouchError: the captions and the map together are not confident enough.
    """
    evidence = image_evidence(normalized)
    if region != "auto":
        return RegionDecision(region, 1.0, {"given": "region", "image": evidence})
    if source is None and lacking is not None:
        return combine(picture_region(lacking), evidence)
    if source is None:
        p_background = evidence["p_background"]
        return RegionDecision(
            "background" if p_background > 0.5 else "foreground",
            round(max(p_background, 1.0 - p_background), 4),
            {"image": evidence, "rule": "the map's mass on the border (no source caption)"},
        )
    guess = llm_region(source, target, llm_url) if classifier == "llm" else caption_region(source, target)
    return combine(guess, evidence)


@torch.no_grad()
def sample_in_region(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    found: EditRegion,
    prompt_embeds: torch.Tensor,
    negative_embeds: torch.Tensor | None,
    *,
    picture: np.ndarray,
    background: np.ndarray,
    scheduler: SchedulerName,
    strength: float,
    steps: int,
    guidance_scale: float,
    seed: int,
    config: masks.MaskConfig | None = None,
    feather: int = DEFAULT_FEATHER_PX,
    progress: bool = False,
) -> Composited:
    """Redraw ``found``'s region of ``picture`` (H', W', 3) from ``prompt_embeds`` (1, tokens,
    dim) and composite it onto ``background`` (H, W, 3), the input at its own size (H <= H',
    W <= W'; the padding is cropped off).

    ``latents`` (1, 4, h, w) encode ``picture``; ``strength`` is the img2img noise level (1.0:
    from pure noise inside the region); ``seed`` draws the noise.
    """
    config = config or masks.MaskConfig()
    z = blended_latent_diffusion(
        pipe,
        latents,
        found.latent_mask,
        prompt_embeds,
        negative_embeds,
        make_scheduler(scheduler, pipe.scheduler.config),
        strength=strength,
        steps=steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator("cpu").manual_seed(seed),
        progress=progress,
        keep_object_mask=found.keep_object_mask,
        keep_object_fraction=config.keep_object_fraction,
    )
    edited = decode(pipe, z)  # (H', W', 3)
    final = found.pixel_mask
    if found.region == "background":
        edited = masks.remove_strays(edited, final, config)
    if found.region == "foreground" and found.recolor:  # the old outline and shading, the new colour
        edited, final = masks.recolor_object(picture, edited, final, config)
    elif found.region == "foreground":  # in the old object's place, snapped to both objects' edges
        edited = masks.align_object(picture, edited, final, config)
        final = masks.refine_mask(final, picture, edited, config)
    return composite_edit(background, edited, final, feather)
