"""Style amount by latent vector augmentation in text-embedding space.

Bin Qi, "Latent space manipulation of stable diffusion model for image generation", section 2.3:
the conditioning is ``slerp(e, e + v, theta)`` with ``e`` the prompt's embeddings and ``v`` the
style's direction, so ``theta = 0`` is the plain prompt, ``theta > 0`` strengthens the style and
``theta < 0`` weakens it. The paper sees Stable Diffusion's pictures break down past about 0.4.

retouch calls theta the style's ``amount``: ``strength`` is the img2img noise level everywhere
else (diffusers' word), so the style's own word keeps the two apart. The old keyword ``strength``,
the CLI flag ``--strength`` and the recipe key ``"strength"`` are still accepted.

Two directions ``v``:
- ``"prompt"`` (default): ``E(prompt) - E(prompt without the phrase)``, what the phrase adds to
  this prompt;
- ``"phrase"``: ``E(phrase) - E("")``, the phrase on its own.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from retouch.core.generate import DEFAULT_SCHEDULER, GenerateResult, generate
from retouch.core.limits import LIMITS, check_number
from retouch.core.schedulers import DEFAULT_STEPS, SchedulerName
from retouch.core.seeding import random_seed
from retouch.core.weighting import encode_weighted_prompt
from retouch.errors import RetouchError
from retouch.io.outputs import SavedFiles, numbered_stem, save_sequence
from retouch.io.png import save_png
from retouch.models.loading import LoadedModel
from retouch.steer.slerp import slerp
from retouch.steer.strip import contact_strip

logger = logging.getLogger(__name__)

StyleDirection = Literal["prompt", "phrase"]
STYLE_DIRECTIONS: tuple[str, ...] = get_args(StyleDirection)
DEFAULT_STYLE_AMOUNT = 0.3
DEFAULT_STYLE_STRENGTH = DEFAULT_STYLE_AMOUNT  # the old name, kept for scripts that import it
DEFAULT_STYLE_DIRECTION: StyleDirection = "prompt"
SAFE_AMOUNTS = (-1.0, 2.0)  # outside this range pictures fall apart; we warn, not refuse


def style_amount(amount: float | None, strength: float | None, default: float | None = DEFAULT_STYLE_AMOUNT) -> float:
    """The style amount theta from ``amount`` or its old name ``strength`` (one of them, or ``default``).

    Recipes and batch jobs written before the rename carry ``"strength"``; they must still replay.
    """
    if strength is not None:
        if amount is not None and amount != strength:
            raise RetouchError(f"amount {amount} and strength {strength} (its old name) disagree; pass amount")
        amount = strength
    if amount is None:
        if default is None:
            raise RetouchError("the style amount (theta) is missing")
        amount = default
    return amount


def remove_phrase(prompt: str, phrase: str) -> str:
    """``prompt`` without ``phrase`` (whole words, any case), whitespace and commas tidied.

    Raises:
        RetouchError: ``phrase`` is empty or does not occur in ``prompt``.
    """
    phrase = phrase.strip()
    if not phrase:
        raise RetouchError("the style phrase is empty; pass the words of the style, e.g. --style pastel")
    pattern = re.compile(rf"(?<!\w){re.escape(phrase)}(?!\w)", re.IGNORECASE)
    removed, count = pattern.subn(" ", prompt)
    if count == 0:
        raise RetouchError(
            f"the style phrase {phrase!r} is not in the prompt {prompt!r}; add it to the prompt, "
            "or take the style's direction from the phrase alone with --direction phrase"
        )
    text = re.sub(r"\s+", " ", removed)
    text = re.sub(r"\s+([,;.])", r"\1", text)  # "background , x" -> "background, x"
    text = re.sub(r"([,;])(?:\s*[,;])+", r"\1", text)  # "a,, b" -> "a, b"
    return text.strip(" ,;")


@torch.no_grad()
def style_direction(
    pipe: StableDiffusionPipeline, prompt: str, phrase: str, direction: StyleDirection = "prompt"
) -> torch.Tensor:
    """The style's direction ``v`` in text-embedding space, ``(1, tokens, dim)``."""
    check_direction(direction)
    if direction == "prompt":
        plain = remove_phrase(prompt, phrase)
        return encode_weighted_prompt(pipe, prompt) - encode_weighted_prompt(pipe, plain)
    if not phrase.strip():
        raise RetouchError("the style phrase is empty; pass the words of the style, e.g. --style pastel")
    return encode_weighted_prompt(pipe, phrase) - encode_weighted_prompt(pipe, "")


def check_direction(direction: str) -> None:
    if direction not in STYLE_DIRECTIONS:
        choices = ", ".join(STYLE_DIRECTIONS)
        raise RetouchError(f"unknown style direction {direction!r}; choose one of: {choices}")


def check_amount(amount: float) -> None:
    """Refuse an amount outside ``LIMITS["amount"]`` (or not finite); warn when it lies outside
    the range where pictures usually hold together."""
    check_number("amount", amount)
    low, high = SAFE_AMOUNTS
    if not low <= amount <= high:
        logger.warning("style amount %g is outside [%g, %g]; expect the picture to break down", amount, low, high)


@torch.no_grad()
def style_embeddings(
    pipe: StableDiffusionPipeline,
    prompt: str,
    phrase: str,
    amount: float | None = None,
    direction: StyleDirection = DEFAULT_STYLE_DIRECTION,
    *,
    strength: float | None = None,
) -> torch.Tensor:
    """``prompt_embeds`` for ``prompt`` with the style ``phrase`` at ``amount`` (theta).

    Pass the result as ``prompt_embeds`` to a Stable Diffusion pipeline call. At ``amount == 0``
    it is exactly ``encode_weighted_prompt(pipe, prompt)``, i.e. the plain pipeline's encoding.
    ``strength`` is ``amount``'s old name, still accepted.
    """
    amount = style_amount(amount, strength, default=None)
    check_amount(amount)
    embeds = encode_weighted_prompt(pipe, prompt)  # (1, tokens, dim)
    v = style_direction(pipe, prompt, phrase, direction)
    return slerp(embeds, embeds + v, amount)  # Qi, section 2.3


def parse_sweep(spec: str) -> list[float]:
    """``"a:b:n"`` -> ``n`` evenly spaced amounts from ``a`` to ``b`` inclusive."""
    parts = spec.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise RetouchError(f"bad sweep {spec!r}; write START:STOP:COUNT, e.g. -0.5:1:7") from None
    if count < 1:
        raise RetouchError(f"a sweep needs at least one amount, got {count} in {spec!r}")
    check_number("the sweep's count", count, LIMITS["num_images"])
    for name, value in (("start", start), ("stop", stop)):
        check_number(f"the sweep's {name}", value, LIMITS["amount"])
    if count == 1:
        return [start]
    return [round(start + (stop - start) * i / (count - 1), 10) for i in range(count)]


def stylize(
    model: LoadedModel | StableDiffusionPipeline,
    prompt: str,
    style: str,
    amount: float | None = None,
    direction: StyleDirection = DEFAULT_STYLE_DIRECTION,
    negative_prompt: str = "",
    num_images: int = 1,
    seed: int | None = None,
    steps: int = DEFAULT_STEPS,
    guidance_scale: float | None = None,
    scheduler: SchedulerName = DEFAULT_SCHEDULER,
    width: int | None = None,
    height: int | None = None,
    progress: bool = False,
    *,
    strength: float | None = None,
) -> GenerateResult:
    """``generate`` with the style ``style`` at ``amount`` (theta); every other input stays fixed.

    The same seed draws the same initial latents at every amount, and ``amount == 0`` gives
    the pixels of ``generate(model, prompt, seed=seed, ...)`` bit for bit. ``amount`` defaults
    to ``DEFAULT_STYLE_AMOUNT``; ``strength`` is its old name, still accepted.
    """
    check_direction(direction)
    amount = style_amount(amount, strength)
    check_number("amount", amount)
    result = generate(
        model,
        prompt,
        negative_prompt=negative_prompt,
        num_images=num_images,
        seed=seed,
        steps=steps,
        guidance_scale=guidance_scale,
        scheduler=scheduler,
        width=width,
        height=height,
        progress=progress,
        prompt_embeds_fn=lambda pipe, text: style_embeddings(pipe, text, style, amount, direction),
    )
    style_fields = {"task": "style", "style": style, "amount": amount, "direction": direction}
    result.recipes = [{**recipe, **style_fields} for recipe in result.recipes]
    return result


@dataclass
class SweepResult:
    images: list[Image.Image]  # one per amount, in order
    recipes: list[dict[str, Any]]  # one per image; each re-creates its image alone
    amounts: list[float]  # the style amount (theta) of each image
    seconds: list[float]
    grid: Image.Image  # the images in one row, weakest style on the left
    grid_recipe: dict[str, Any]  # re-creates the grid

    @property
    def strengths(self) -> list[float]:
        """``amounts``' old name."""
        return self.amounts

    def save(self, folder: str | os.PathLike[str]) -> SavedFiles:
        """Write ``NNNNN-SEED-KK.png`` per amount and the grid ``NNNNN-SEED-sweep.png``, each with
        its recipe, numbered on from the last A1111-style number in ``folder``."""
        stem = numbered_stem(folder, self.grid_recipe["seed"])
        files = save_sequence(stem, self.images, self.recipes)
        return SavedFiles(files, save_png(self.grid, f"{stem}-sweep.png", self.grid_recipe))


def style_sweep(
    model: LoadedModel | StableDiffusionPipeline,
    prompt: str,
    style: str,
    sweep: str,
    direction: StyleDirection = DEFAULT_STYLE_DIRECTION,
    seed: int | None = None,
    **kwargs: Any,
) -> SweepResult:
    """``stylize`` at each amount of ``sweep`` (``"a:b:n"``) with one seed, and their grid.

    ``kwargs`` are ``stylize``'s (negative prompt, steps, guidance scale, scheduler, size, progress).
    """
    amounts = parse_sweep(sweep)
    seed = random_seed() if seed is None else seed
    results = [stylize(model, prompt, style, theta, direction, seed=seed, **kwargs) for theta in amounts]
    images = [result.images[0] for result in results]
    recipes = [result.recipes[0] for result in results]
    grid_recipe = {key: value for key, value in recipes[0].items() if key != "amount"}
    grid_recipe["sweep"] = sweep
    seconds = [result.seconds[0] for result in results]
    return SweepResult(images, recipes, amounts, seconds, contact_strip(images), grid_recipe)
