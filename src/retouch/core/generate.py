"""Text-to-image: a thin wrapper of ``StableDiffusionPipeline.__call__`` that records recipes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from retouch.core.components import pipe_name, scheduler_swapped
from retouch.core.limits import check_number, check_size
from retouch.core.prompts import warn_if_truncated, warn_if_unknown_tokens
from retouch.core.schedulers import DEFAULT_STEPS, SchedulerName, make_scheduler
from retouch.core.seeding import MAX_SEED, random_seed
from retouch.core.weighting import encode_if_weighted, encode_weighted_prompt, has_weighting, prompt_text
from retouch.errors import RetouchError
from retouch.io.outputs import save_numbered
from retouch.models.loading import FALLBACK_GUIDANCE_SCALE, LoadedModel

DEFAULT_GUIDANCE_SCALE = FALLBACK_GUIDANCE_SCALE  # for models that recommend no scale
DEFAULT_SCHEDULER: SchedulerName = "euler-a"

# (pipe, prompt) -> the text encoder's hidden states to condition on, (1, tokens, dim)
PromptEmbedsFn = Callable[[StableDiffusionPipeline, str], torch.Tensor]


@dataclass
class GenerateResult:
    """The pictures and the recipes that replay them."""

    images: list[Image.Image]
    recipes: list[dict[str, Any]]  # one per image; each re-creates its image alone
    seconds: list[float]  # wall time per image

    def save(self, folder: str | os.PathLike[str]) -> list[Path]:
        """Write each picture with its recipe as ``folder/NNNNN-SEED.png`` (AUTOMATIC1111's
        numbering, on from the folder's last file), atomically; returns the paths."""
        return save_numbered(folder, self.images, self.recipes)


def default_size(pipe: StableDiffusionPipeline) -> tuple[int, int]:
    """(width, height) the UNet was trained at, in pixels."""
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return side, side


def fill_defaults(
    model: LoadedModel | StableDiffusionPipeline,
    guidance_scale: float | None,
    width: int | None,
    height: int | None,
    seed: int | None,
    source: str = "pipeline",
) -> tuple[LoadedModel, float, int, int, int]:
    """``(loaded, guidance_scale, width, height, seed)`` with what the caller left as ``None``
    filled in: the model's recommended guidance scale, the UNet's training size, and a random
    seed (recorded in the recipe, so the picture still replays). A bare pipeline is wrapped as
    a ``LoadedModel`` whose recipe names it as ``source``."""
    loaded = model if isinstance(model, LoadedModel) else LoadedModel(model, pipe_name(model), source)
    default_width, default_height = default_size(loaded.pipe)
    seed = random_seed() if seed is None else seed
    return loaded, loaded.guidance_scale(guidance_scale), width or default_width, height or default_height, seed


def generate(
    model: LoadedModel | StableDiffusionPipeline,
    prompt: str,
    negative_prompt: str = "",
    num_images: int = 1,
    seed: int | None = None,
    steps: int = DEFAULT_STEPS,
    guidance_scale: float | None = None,
    scheduler: SchedulerName = DEFAULT_SCHEDULER,
    width: int | None = None,
    height: int | None = None,
    progress: bool = False,
    prompt_embeds_fn: PromptEmbedsFn | None = None,
) -> GenerateResult:
    """Generate ``num_images`` images from ``prompt``.

    Image ``i`` uses its own CPU generator seeded with ``seed + i`` and its own pipeline call,
    so each image's recipe reproduces it bit for bit on its own (batching the calls would let
    the batch size change the floating-point results).

    Args:
        model: a ``LoadedModel`` from ``load_model``, or a bare diffusers pipeline.
        seed: the first image's seed; random (and recorded) when ``None``.
        width, height: default to the UNet's training size (``sample_size * vae_scale_factor``).
        prompt_embeds_fn: computes the conditioning from the prompt (e.g. a style strength, see
            ``retouch.steer.style``). By default a prompt with AUTOMATIC1111 weighting syntax such
            as ``(word:1.3)`` goes through ``encode_weighted_prompt``, any other through the pipeline.
    """
    loaded, guidance_scale, width, height, seed = fill_defaults(model, guidance_scale, width, height, seed)
    pipe = loaded.pipe
    check_generate_arguments(num_images, seed, steps, width, height, guidance_scale)
    warn_if_truncated(pipe.tokenizer, prompt_text(prompt), "prompt")
    warn_if_unknown_tokens(pipe.tokenizer, prompt, "prompt")
    if negative_prompt:
        warn_if_truncated(pipe.tokenizer, prompt_text(negative_prompt), "negative prompt")
    if prompt_embeds_fn is None and has_weighting(prompt):
        prompt_embeds_fn = encode_weighted_prompt
    prompt_embeds = prompt_embeds_fn(pipe, prompt) if prompt_embeds_fn else None  # (1, tokens, dim)
    negative_embeds = encode_if_weighted(pipe, negative_prompt)

    recipe = {
        "task": "generate",
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "seed": seed,
        "steps": steps,
        "guidance_scale": guidance_scale,
        "scheduler": scheduler,
        "width": width,
        "height": height,
        **loaded.recipe_fields(),
    }
    result = GenerateResult([], [], [])
    with scheduler_swapped(pipe, make_scheduler(scheduler, pipe.scheduler.config)):
        for i in range(num_images):
            start = time.perf_counter()
            pipe.set_progress_bar_config(
                disable=not progress, leave=False, desc=f"image {i + 1}/{num_images}"
            )
            output = pipe(
                prompt=None if prompt_embeds is not None else prompt,
                prompt_embeds=prompt_embeds,
                negative_prompt=None if negative_embeds is not None else negative_prompt or None,
                negative_prompt_embeds=negative_embeds,
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                width=width,
                height=height,
                generator=torch.Generator("cpu").manual_seed(seed + i),
            )
            result.images.append(output.images[0])
            result.recipes.append({**recipe, "seed": seed + i})
            result.seconds.append(time.perf_counter() - start)
    return result


def check_generate_arguments(
    num_images: int, seed: int, steps: int, width: int, height: int, guidance_scale: float | None = None
) -> None:
    """Refuse counts, seeds, sizes and a guidance scale outside ``retouch.core.limits``."""
    check_number("num_images", num_images)
    check_number("seed", seed)
    if seed > MAX_SEED - num_images:
        raise RetouchError(f"seed must be between 0 and {MAX_SEED - num_images}, got {seed}")
    check_number("steps", steps)
    check_size(width, height)
    if guidance_scale is not None:
        check_number("guidance_scale", guidance_scale)
