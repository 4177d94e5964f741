"""Prompt interpolation: frames along a slerp between two prompts' text embeddings, one seed.

DALL-E 2 (Ramesh et al. 2022, section 3.2 and figure 4) interpolates CLIP embeddings with
slerp while the decoder's noise stays fixed; here the conditioning is the text encoder's last
hidden states, slerped token by token, and the initial latents are drawn once from the seed
(optionally slerped toward a second seed's) so only the text moves from frame to frame.

A small model decides where the object goes in the first, noisiest steps, and it decides that
from the text too, so frames of two prompts that differ only in colour can still put the object
in different places. ``layout_steps`` makes every frame take its first steps on the path's
midpoint, so all frames share one layout and only the rest of the sampling follows the frame's
own text (the same trade as prompt-to-prompt's "cross-attention injection" for the first steps,
Hertz et al. 2022, section 3.2, done here on the whole conditioning). ``hold_common`` does
prompt-to-prompt itself: every frame is sampled beside prompt A and takes A's cross-attention
maps (``steer.share``), so it draws A's layout in its own colours, and its pixels outside the
region where the prompts disagree are then frame 0's (``steer.hold``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from retouch.core.components import scheduler_swapped
from retouch.core.generate import DEFAULT_SCHEDULER, check_generate_arguments, fill_defaults
from retouch.core.limits import check_number, check_numbers
from retouch.core.prompts import warn_if_truncated, warn_if_unknown_tokens
from retouch.core.schedulers import DEFAULT_STEPS, SchedulerName, make_scheduler
from retouch.core.weighting import encode_if_weighted, encode_weighted_prompt, prompt_text
from retouch.errors import RetouchError
from retouch.io.outputs import SavedFiles, numbered_stem, save_sequence
from retouch.io.png import save_png
from retouch.models.loading import LoadedModel
from retouch.steer.hold import chain, changing_region, keep_pixels, record_latents
from retouch.steer.share import SharedClock, shared_cross_attention
from retouch.steer.slerp import slerp
from retouch.steer.strip import GIF_FRAME_MS, contact_strip, save_gif

DEFAULT_FRAMES = 9


@dataclass
class InterpolateResult:
    images: list[Image.Image]  # the frames made, in order
    recipes: list[dict[str, Any]]  # one per frame; each re-creates its frame alone
    ts: list[float]  # each frame's position on the path, 0 = prompt A, 1 = prompt B
    seconds: list[float]  # wall time per frame
    strip: Image.Image | None = None  # all frames side by side (None when only some were made)
    strip_recipe: dict[str, Any] = field(default_factory=dict)  # re-creates the strip

    def save(self, folder: str | os.PathLike[str], frame_ms: int = GIF_FRAME_MS) -> SavedFiles:
        """Write frame ``k`` as ``NNNNN-SEED-KK.png`` (each replays alone), and for a whole path
        the contact strip ``NNNNN-SEED-strip.png`` and the looping GIF ``NNNNN-SEED.gif``,
        numbered on from the last A1111-style number in ``folder``."""
        check_number("frame_ms", frame_ms)
        stem = numbered_stem(folder, self.recipes[0]["seed"])
        numbers = [recipe["frame"] for recipe in self.recipes]
        saved = SavedFiles(save_sequence(stem, self.images, self.recipes, numbers))
        if self.strip is not None:
            saved.sheet = save_png(self.strip, f"{stem}-strip.png", self.strip_recipe)
            saved.animation = save_gif(self.images, f"{stem}.gif", frame_ms)
        return saved


@dataclass
class FramePath:
    """What every frame of one interpolation shares, prepared once."""

    pipe: StableDiffusionPipeline
    ts: list[float]  # each frame's position on the path
    seed: int  # draws the initial latents and the sampler's noise
    noise_seed_b: int | None  # slerp the initial latents toward this seed's too
    layout_steps: int  # steps taken on the path's midpoint
    embeds_a: torch.Tensor  # (1, tokens, dim)
    embeds_b: torch.Tensor  # (1, tokens, dim)
    latents_shape: tuple[int, ...]  # (1, channels, height / 8, width / 8)
    call: dict[str, Any]  # the pipeline call's arguments common to every frame
    negative_pair: torch.Tensor | None  # (2, tokens, dim): the held frames' batch [A, frame]
    progress: bool


def frame_positions(frames: int) -> list[float]:
    """``frames`` evenly spaced positions from 0 to 1 inclusive."""
    if frames < 2:
        raise RetouchError(f"an interpolation needs at least 2 frames, got {frames}")
    return [k / (frames - 1) for k in range(frames)]


def interpolate(
    model: LoadedModel | StableDiffusionPipeline,
    prompt_a: str,
    prompt_b: str,
    frames: int = DEFAULT_FRAMES,
    seed: int | None = None,
    noise_seed_b: int | None = None,
    negative_prompt: str = "",
    steps: int = DEFAULT_STEPS,
    guidance_scale: float | None = None,
    scheduler: SchedulerName = DEFAULT_SCHEDULER,
    width: int | None = None,
    height: int | None = None,
    frame: int | None = None,
    layout_steps: int = 0,
    hold_common: float = 0.0,
    progress: bool = False,
) -> InterpolateResult:
    """Make ``frames`` pictures whose text conditioning slerps from ``prompt_a`` to ``prompt_b``.

    Every frame starts from the initial latents that ``seed`` draws (the ones ``generate`` with
    that seed starts from), and its sampler draws any further noise from the same generator, so
    frame 0 equals ``generate(model, prompt_a, seed=seed)`` and the last frame equals
    ``generate(model, prompt_b, seed=seed)``, bit for bit.

    Args:
        noise_seed_b: also slerp the initial latents, from ``seed``'s to ``noise_seed_b``'s. An
            ancestral sampler (``euler-a``) still draws its per-step noise from ``seed``.
        frame: make only frame ``frame`` (0-based), as a replay of one frame does.
        layout_steps: condition the first ``layout_steps`` of the ``steps`` sampling steps of every
            frame on the midpoint ``slerp(A, B, 0.5)``, so every frame keeps one layout (object
            position and size). The ends then no longer equal ``generate`` of A and of B.
        hold_common: for this fraction of the steps, every frame after the first is sampled in
            one batch with prompt A and takes A's cross-attention maps (prompt-to-prompt,
            ``steer.share``); its decoded pixels outside the region the two prompts disagree on
            (found as DiffEdit finds an edit's mask) are then frame 0's, through a feathered mask
            as ``edit`` composites, so only what the prompts differ in moves (``steer.hold``).
            Needs prompts that differ in the foreground or the background, not in the whole
            picture, and no ``layout_steps``. Frame 0 is unchanged by it; each other frame costs
            two samplings. An ancestral sampler draws the frames' step noise for the pair.
    """
    loaded, guidance_scale, width, height, seed = fill_defaults(model, guidance_scale, width, height, seed, "folder")
    pipe = loaded.pipe
    check_interpolate_arguments(
        frames, frame, seed, noise_seed_b, steps, width, height, layout_steps, hold_common, guidance_scale
    )
    ts = frame_positions(frames)
    for text, what in ((prompt_a, "prompt A"), (prompt_b, "prompt B"), (negative_prompt, "negative prompt")):
        warn_if_truncated(pipe.tokenizer, prompt_text(text), what)
        warn_if_unknown_tokens(pipe.tokenizer, text, what)

    path = prepare_path(
        pipe,
        prompt_a=prompt_a,
        prompt_b=prompt_b,
        negative_prompt=negative_prompt,
        ts=ts,
        seed=seed,
        noise_seed_b=noise_seed_b,
        layout_steps=layout_steps,
        held=bool(hold_common),
        call={"num_inference_steps": steps, "guidance_scale": guidance_scale, "width": width, "height": height},
        progress=progress,
    )
    recipe = {
        "task": "interpolate",
        "prompt": f"{prompt_a} -> {prompt_b}",  # for AUTOMATIC1111's parameters text; not read back
        **{"prompt_a": prompt_a, "prompt_b": prompt_b, "negative_prompt": negative_prompt, "frames": frames},
        **{"seed": seed, "noise_seed_b": noise_seed_b, "layout_steps": layout_steps, "hold_common": hold_common},
        **{"steps": steps, "guidance_scale": guidance_scale, "scheduler": scheduler},
        **{"width": width, "height": height, **loaded.recipe_fields()},
    }
    indices = range(frames) if frame is None else [frame]
    with scheduler_swapped(pipe, make_scheduler(scheduler, pipe.scheduler.config)):
        if hold_common:
            images, seconds = sample_held_frames(path, indices, prompt_a, prompt_b, round(hold_common * steps))
        else:
            images, seconds = sample_frames(path, indices)
    return report_frames(path, indices, images, seconds, recipe, whole=frame is None)


def check_interpolate_arguments(
    frames: int,
    frame: int | None,
    seed: int,
    noise_seed_b: int | None,
    steps: int,
    width: int,
    height: int,
    layout_steps: int,
    hold_common: float,
    guidance_scale: float | None = None,
) -> None:
    """Refuse settings that cannot make a path, with the reason, before any sampling."""
    if isinstance(frames, int) and frames < 2:
        frame_positions(frames)  # its own message
    check_numbers({"frames": frames, "frame": frame})
    check_generate_arguments(1, seed, steps, width, height, guidance_scale)
    if noise_seed_b is not None:
        check_generate_arguments(1, noise_seed_b, steps, width, height)
    if not 0 <= layout_steps < steps:
        raise RetouchError(f"layout_steps must be at least 0 and below steps ({steps}), got {layout_steps}")
    if not 0 <= hold_common <= 1:
        raise RetouchError(f"hold_common is a fraction of the steps, from 0 to 1, got {hold_common}")
    if hold_common and layout_steps:
        raise RetouchError("layout_steps and hold_common are two ways to keep the layout; choose one")
    if frame is not None and not 0 <= frame < frames:
        raise RetouchError(f"frame must be between 0 and {frames - 1}, got {frame}")


def prepare_path(
    pipe: StableDiffusionPipeline,
    *,
    prompt_a: str,
    prompt_b: str,
    negative_prompt: str,
    ts: list[float],
    seed: int,
    noise_seed_b: int | None,
    layout_steps: int,
    held: bool,
    call: dict[str, Any],
    progress: bool,
) -> FramePath:
    """Encode the two prompts and the negative prompt once for every frame."""
    embeds_a = encode_weighted_prompt(pipe, prompt_a)  # (1, tokens, dim)
    embeds_b = encode_weighted_prompt(pipe, prompt_b)
    negative_embeds = encode_if_weighted(pipe, negative_prompt)
    scale = pipe.vae_scale_factor
    latents_shape = (1, pipe.unet.config.in_channels, call["height"] // scale, call["width"] // scale)
    negative_pair = None  # the held frames' batch [A, frame] needs the negative encoded, once
    if held:
        negative = negative_embeds if negative_embeds is not None else encode_weighted_prompt(pipe, negative_prompt)
        negative_pair = torch.cat([negative, negative])
    call = {
        "negative_prompt": None if negative_embeds is not None else negative_prompt or None,
        "negative_prompt_embeds": negative_embeds,
        **call,
    }
    return FramePath(
        pipe=pipe,
        ts=ts,
        seed=seed,
        noise_seed_b=noise_seed_b,
        layout_steps=layout_steps,
        embeds_a=embeds_a,
        embeds_b=embeds_b,
        latents_shape=latents_shape,
        call=call,
        negative_pair=negative_pair,
        progress=progress,
    )


def sample_frame(path: FramePath, k: int, shared: int = 0, record: list | None = None) -> Image.Image:
    """Frame ``k``; ``shared``: steps for which it takes prompt A's cross-attention maps,
    sampled beside A in one batch; ``record`` collects its latents after every step."""
    pipe, t = path.pipe, path.ts[k]
    pipe.set_progress_bar_config(disable=not path.progress, leave=False, desc=f"frame {k + 1}/{len(path.ts)}")
    latents, generator = initial_latents(pipe, path.latents_shape, path.seed, path.embeds_a.dtype)
    if path.noise_seed_b is not None:
        latents_b, _ = initial_latents(pipe, path.latents_shape, path.noise_seed_b, path.embeds_a.dtype)
        latents = slerp(latents.flatten(), latents_b.flatten(), t).view(path.latents_shape)
    embeds = slerp(path.embeds_a, path.embeds_b, t)  # token by token
    layout = slerp(path.embeds_a, path.embeds_b, 0.5) if path.layout_steps else embeds
    callback = swap_prompt_embeds(path.layout_steps, embeds) if path.layout_steps else None
    if record is not None:
        callback = chain(callback, record_latents(record))
    arguments = {**path.call, "prompt_embeds": layout, "latents": latents}
    clock = SharedClock(until=shared)
    if shared:  # the batch [A, frame k]: A's maps go to the frame (steer.share)
        arguments.update(
            prompt_embeds=torch.cat([path.embeds_a, embeds]),
            latents=torch.cat([latents, latents]),
            negative_prompt=None,
            negative_prompt_embeds=path.negative_pair,
        )
        callback = chain(clock.callback(), callback)
    with shared_cross_attention(pipe.unet, clock) if shared else nullcontext():
        output = pipe(
            generator=generator,
            callback_on_step_end=callback,
            callback_on_step_end_tensor_inputs=["prompt_embeds", "latents"],
            **arguments,
        )
    return output.images[-1]


def sample_frames(path: FramePath, indices: Sequence[int]) -> tuple[list[Image.Image], list[float]]:
    """The frames ``indices``, each on its own, and the wall time of each."""
    images, seconds = [], []
    for k in indices:
        start = time.perf_counter()
        images.append(sample_frame(path, k))
        seconds.append(time.perf_counter() - start)
    return images, seconds


def sample_held_frames(
    path: FramePath, indices: Sequence[int], prompt_a: str, prompt_b: str, shared: int
) -> tuple[list[Image.Image], list[float]]:
    """Frame 0 alone and where the prompts disagree on its picture; then every other frame of
    ``indices`` with A's layout (``shared`` steps of A's maps), its shared region frame 0's pixels."""
    start = time.perf_counter()
    trajectory: list[torch.Tensor] = []
    first = sample_frame(path, 0, record=trajectory)
    first_seconds = time.perf_counter() - start
    first_pixels = np.asarray(first.convert("RGB"))  # (H, W, 3)
    changing = changing_region(
        path.pipe, trajectory[-1], prompt_a, prompt_b, path.embeds_a, path.embeds_b, path.seed
    )
    images, seconds = [], []
    for k in indices:
        start = time.perf_counter()
        if k == 0:
            images.append(first)
            seconds.append(first_seconds)
            continue
        own = np.asarray(sample_frame(path, k, shared=shared).convert("RGB"))
        images.append(Image.fromarray(keep_pixels(first_pixels, own, changing)))
        seconds.append(time.perf_counter() - start)
    return images, seconds


def report_frames(
    path: FramePath,
    indices: Sequence[int],
    images: list[Image.Image],
    seconds: list[float],
    recipe: dict[str, Any],
    whole: bool,
) -> InterpolateResult:
    """Each frame's recipe (it replays that frame alone) and, for the whole path, the strip."""
    name = recipe["prompt"]
    recipes = [{**recipe, "prompt": f"{name} (t={path.ts[k]:.3f})", "frame": k} for k in indices]
    result = InterpolateResult(images, recipes, [path.ts[k] for k in indices], seconds)
    if whole:
        result.strip, result.strip_recipe = contact_strip(images), recipe
    return result


def initial_latents(
    pipe: StableDiffusionPipeline, shape: tuple[int, ...], seed: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Generator]:
    """The latents a ``StableDiffusionPipeline`` call would start from with a generator seeded
    ``seed``, and that generator, left where the pipeline would leave it after drawing them (so
    passing both as ``latents=`` and ``generator=`` reproduces the call's sampler noise too)."""
    generator = torch.Generator("cpu").manual_seed(seed)
    latents = randn_tensor(shape, generator=generator, device=pipe._execution_device, dtype=dtype)
    return latents, generator


def swap_prompt_embeds(after_steps: int, embeds: torch.Tensor) -> Callable[..., dict]:
    """A ``callback_on_step_end`` that conditions the sampling on ``embeds`` (1, tokens, dim) from
    step ``after_steps`` on; under classifier-free guidance the pipeline's negative half is kept."""

    def callback(pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        if step_index + 1 == after_steps:
            current = callback_kwargs["prompt_embeds"]  # (2, ...) negative then positive, or (1, ...)
            new = embeds.to(current.device, current.dtype)
            callback_kwargs["prompt_embeds"] = torch.cat([current[:1], new]) if len(current) == 2 else new
        return callback_kwargs

    return callback
