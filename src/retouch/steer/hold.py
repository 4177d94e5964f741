"""Hold what two prompts share while an interpolation moves what they differ in.

Two prompts that differ only in the background ("a red circle on a blue background" -> "... on a
green background") should give frames whose circle stays where it is. The frames' text alone
cannot promise that: a small model places the object from the text too. So, as Blended Latent
Diffusion keeps the unedited region of an edit (Avrahami et al. 2022), every frame here keeps
the region the two prompts agree on from one shared sampling trajectory, the first frame's
(prompt A's own picture, so frame 0 is unchanged):

1. sample frame 0, recording its latents after every step;
2. find where A and B disagree on that picture, DiffEdit's way (``edit.masks``): the difference
   of the model's predictions under the two prompts, cut by the region the prompts' difference
   names (``edit.region``);
3. sample each other frame under its own conditioning, and after each of the held steps
   replace its latents outside that region by frame 0's at the same step;
4. composite the decoded frame onto frame 0's picture through that region's pixel mask, grown
   by a 1-px rim and feathered as ``edit`` composites an edit onto its input, so what the
   prompts share is the same pixels in every frame (the latents alone leave a decoded object a
   pixel or two off). The rim is the kept part's outermost pixels, which blend it with frame
   0's own surroundings: kept, they would carry a line of A's background onto B's.

While the layout forms (the first half of the held steps) every latent cell the object touches
is held, so the model sees the whole object and does not draw another; afterwards the cells it
shares with the background follow the frame, so they take the frame's own colour (the same
trade as ``edit``'s background edits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from scipy import ndimage

from retouch.edit import masks
from retouch.edit.latents import decode
from retouch.edit.layer import DEFAULT_FEATHER_PX, composite, feather_alpha
from retouch.edit.region import caption_region
from retouch.errors import RetouchError
from retouch.steer.weighting import prompt_text

RIM_PX = 1  # the kept part's outermost pixels that follow the frame (measured: docs/benchmarks.md)


def chain(*callbacks: Callable[..., dict] | None) -> Callable[..., dict]:
    """One ``callback_on_step_end`` that runs ``callbacks`` (None skipped) in order."""
    steps = [c for c in callbacks if c is not None]

    def callback(pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        for step in steps:
            callback_kwargs = step(pipeline, step_index, timestep, callback_kwargs)
        return callback_kwargs

    return callback


def record_latents(store: list[torch.Tensor]) -> Callable[..., dict]:
    """A ``callback_on_step_end`` that appends a copy of the latents after every step to ``store``."""

    def callback(pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        store.append(callback_kwargs["latents"].detach().clone())
        return callback_kwargs

    return callback


@dataclass(frozen=True)
class ChangingRegion:
    """Where the frames follow their own text; True = the frame's own, False = frame 0's."""

    pixels: np.ndarray  # (H, W) bool: the composite's mask
    early: np.ndarray  # (h, w) bool latent mask for the first half of the held steps: leaves out
    # every latent cell the kept part touches
    late: np.ndarray  # (h, w) bool latent mask for the rest: leaves out only the cells it fills


@torch.no_grad()
def changing_region(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    prompt_a: str,
    prompt_b: str,
    embeds_a: torch.Tensor,
    embeds_b: torch.Tensor,
    seed: int,
) -> ChangingRegion:
    """Where the two prompts disagree about the picture ``latents`` (1, 4, h, w).

    The map's region is snapped to the object as the decoded picture draws it, as ``edit`` does.

    Raises:
        RetouchError: the prompts' difference names the whole picture (a style), so nothing is
            shared to hold.
    """
    guess = caption_region(prompt_text(prompt_a), prompt_text(prompt_b))
    if guess.region == "global":
        raise RetouchError(
            "hold_common keeps what the two prompts share, but these differ in the whole picture "
            f"(changed: {', '.join(guess.evidence.get('changed', [])) or 'style'}); interpolate without it"
        )
    generator, config = torch.Generator("cpu").manual_seed(seed), masks.MaskConfig()
    raw = masks.difference_map(pipe, latents, embeds_a, embeds_b, generator, config)
    region = masks.region_mask(masks.normalize_map(raw, config), guess.region, config)
    picture = decode(pipe, latents)  # (H, W, 3)
    pixels, late, early = masks.snap_to_object(region, guess.region, picture, pipe.vae_scale_factor, config)
    if not late.any() or late.all():  # nothing found to hold: every pixel follows the frame
        everything = np.ones(region.shape, dtype=bool)
        return ChangingRegion(np.ones(picture.shape[:2], dtype=bool), everything, everything)
    return ChangingRegion(pixels, early, late)


def hold_latents(held: list[torch.Tensor], changing: ChangingRegion, hold_steps: int) -> Callable[..., dict]:
    """A ``callback_on_step_end`` that, after each of the first ``hold_steps`` steps, puts back the
    ``held`` trajectory's latents outside ``changing`` (its early mask for the first half of
    them, then its late one)."""
    first, second = (torch.from_numpy(m.astype(np.float32))[None, None] for m in (changing.early, changing.late))

    def callback(pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        if step_index < hold_steps:
            latents = callback_kwargs["latents"]
            mask = (first if step_index < hold_steps // 2 else second).to(latents.device, latents.dtype)
            callback_kwargs["latents"] = mask * latents + (1 - mask) * held[step_index].to(latents.device)
        return callback_kwargs

    return callback


def keep_pixels(
    first: np.ndarray,
    frame: np.ndarray,
    changing: ChangingRegion,
    feather: int = DEFAULT_FEATHER_PX,
    rim: int = RIM_PX,
) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 inside ``changing`` grown by ``rim`` pixels, ``first``'s pixels
    elsewhere: the mask fades over ``feather`` pixels into the kept part, and pixels farther in
    are ``first``'s bit for bit."""
    own = changing.pixels
    if rim > 0 and own.any():
        own = ndimage.binary_dilation(own, iterations=rim)
    return composite(first, frame, feather_alpha(own, feather))
