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
   replace its latents outside that region by frame 0's at the same step.

While the layout forms (the first half of the held steps) every latent cell the object touches
is held, so the model sees the whole object and does not draw another; afterwards the cells it
shares with the background follow the frame, so they take the frame's own colour (the same
trade as ``edit``'s background edits).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from retouch.edit import masks
from retouch.edit.latents import decode
from retouch.edit.region import caption_region
from retouch.errors import RetouchError
from retouch.steer.weighting import prompt_text


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
) -> tuple[np.ndarray, np.ndarray]:
    """Where the two prompts disagree about the picture ``latents`` (1, 4, h, w): two (h, w) bool
    masks, True = the frame's own. The first leaves out every latent cell the kept part of the
    picture touches (for the first half of the held steps), the second only those it fills.

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
    _, late, early = masks.snap_to_object(region, guess.region, decode(pipe, latents), pipe.vae_scale_factor, config)
    if not late.any() or late.all():  # nothing found to hold: every cell follows the frame
        return np.ones(region.shape, dtype=bool), np.ones(region.shape, dtype=bool)
    return early, late


def hold_latents(
    held: list[torch.Tensor], changing: tuple[np.ndarray, np.ndarray], hold_steps: int
) -> Callable[..., dict]:
    """A ``callback_on_step_end`` that, after each of the first ``hold_steps`` steps, puts back the
    ``held`` trajectory's latents outside ``changing`` (its first mask for the first half of
    them, then its second)."""
    first, second = (torch.from_numpy(m.astype(np.float32))[None, None] for m in changing)  # (1, 1, h, w)

    def callback(pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        if step_index < hold_steps:
            latents = callback_kwargs["latents"]
            mask = (first if step_index < hold_steps // 2 else second).to(latents.device, latents.dtype)
            callback_kwargs["latents"] = mask * latents + (1 - mask) * held[step_index].to(latents.device)
        return callback_kwargs

    return callback
