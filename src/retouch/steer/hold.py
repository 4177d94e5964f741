"""Keep what two prompts share while an interpolation moves what they differ in.

Two prompts that differ only in the background ("a red circle on a blue background" -> "... on a
green background") should give frames whose circle stays where it is. Every frame after the
first takes prompt A's layout from A's cross-attention maps (``steer.share``); what is left is a
decoded object a pixel or two off and the halo of A's background around it. So, as ``edit``
keeps the unedited part of an edit:

1. find where A and B disagree on frame 0's picture with ``edit``'s region pipeline
   (``edit.region_pipeline.find_edit_region``): DiffEdit's difference of the model's predictions
   under the two prompts, cut by the region the prompts' difference names (``edit.region``) and
   snapped to the object drawn;
2. composite each decoded frame onto frame 0's picture through that region's pixel mask, grown
   by a 1-px rim and feathered as ``edit`` composites an edit onto its input, so what the prompts
   share is the same pixels in every frame. The rim is the kept part's outermost pixels, which
   blend it with frame 0's own surroundings: kept, they would carry a line of A's background
   onto B's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from scipy import ndimage

from retouch.core.latents import decode
from retouch.core.weighting import prompt_text
from retouch.edit.layer import DEFAULT_FEATHER_PX, composite, feather_alpha
from retouch.edit.region import caption_region
from retouch.edit.region_pipeline import find_edit_region
from retouch.errors import RetouchError

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


@torch.no_grad()
def changing_region(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    prompt_a: str,
    prompt_b: str,
    embeds_a: torch.Tensor,
    embeds_b: torch.Tensor,
    seed: int,
) -> np.ndarray:
    """Where the two prompts disagree about the picture ``latents`` (1, 4, h, w): an (H, W) bool
    pixel mask, True where the frames follow their own text, False where they keep frame 0's.

    The map's region is snapped to the object as the decoded picture draws it, as ``edit`` does.

    Raises:
        RetouchError: the prompts' difference names the whole picture (a style), so nothing is
            shared to hold.
    """
    text_a, text_b = prompt_text(prompt_a), prompt_text(prompt_b)
    guess = caption_region(text_a, text_b)  # the prompts alone decide: the map only places it
    if guess.region == "global":
        raise RetouchError(
            "hold_common keeps what the two prompts share, but these differ in the whole picture "
            f"(changed: {', '.join(guess.evidence.get('changed', [])) or 'style'}); interpolate without it"
        )
    picture = decode(pipe, latents)  # (H, W, 3)
    found = find_edit_region(
        pipe, latents, picture, embeds_a, embeds_b, source=text_a, target=text_b, seed=seed,
        region=guess.region, if_empty=None,
    )
    if not found.latent_mask.any() or found.latent_mask.all():  # nothing to keep: all follow the frame
        return np.ones(picture.shape[:2], dtype=bool)
    return found.pixel_mask


def keep_pixels(
    first: np.ndarray,
    frame: np.ndarray,
    changing: np.ndarray,
    feather: int = DEFAULT_FEATHER_PX,
    rim: int = RIM_PX,
) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 inside ``changing`` (H, W) grown by ``rim`` pixels, ``first``'s
    pixels elsewhere: the mask fades over ``feather`` pixels into the kept part, and pixels
    farther in are ``first``'s bit for bit."""
    if rim > 0 and changing.any():
        changing = ndimage.binary_dilation(changing, iterations=rim)
    return composite(first, frame, feather_alpha(changing, feather))
