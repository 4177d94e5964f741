"""The one table of limits every number a user gives is checked against.

The Python API, the CLI, batch jobs, replayed recipes (and any UI over them) call these
checks, so they all refuse the same inputs with the same message. A NaN or an infinity is never
a setting anyone meant: ``guidance_scale=nan`` would silently turn guidance off and
``inf`` paint a black picture, so every number must be finite and inside its range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from types import MappingProxyType
from typing import Any

from retouch.core.seeding import MAX_SEED
from retouch.errors import RetouchError
from retouch.io.convert import MAX_PIXELS, MAX_SIDE

MAX_STEPS = 1000  # the length of SD's training schedule: more steps would only repeat timesteps
MAX_IMAGES = 1000  # pictures (or frames, or sweep amounts) from one call; batch jobs hold more
MAX_TRAIN_STEPS = 100_000  # Imagic's stages A and B (500 and 1000 for SD-sized models)


@dataclass(frozen=True)
class Limit:
    """A closed range ``[low, high]`` (``(low, high]`` when ``low_open``) of numbers."""

    low: float
    high: float
    integer: bool = False  # a whole number (a count, a size, a seed)
    low_open: bool = False  # ``low`` itself is refused (a strength or a learning rate of 0)

    def describe(self) -> str:
        kind = "a whole number" if self.integer else "a finite number"
        return f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


LIMITS: Mapping[str, Limit] = MappingProxyType(
    {
        "steps": Limit(1, MAX_STEPS, integer=True),
        "num_images": Limit(1, MAX_IMAGES, integer=True),
        "frames": Limit(2, MAX_IMAGES, integer=True),
        "frame": Limit(0, MAX_IMAGES - 1, integer=True),
        "frame_ms": Limit(10, 60_000, integer=True),  # a GIF frame: GIF counts in 10 ms units
        "seeds": Limit(1, 100, integer=True),
        "seed": Limit(0, MAX_SEED, integer=True),
        "noise_seed_b": Limit(0, MAX_SEED, integer=True),
        "train_seed": Limit(0, MAX_SEED, integer=True),
        "width": Limit(1, MAX_SIDE, integer=True),
        "height": Limit(1, MAX_SIDE, integer=True),
        "guidance_scale": Limit(0, 50),  # A1111's slider stops at 30
        "image_guidance_scale": Limit(1, 50),  # InstructPix2Pix needs at least 1
        "feather": Limit(0, 64, integer=True),  # px over which a composite fades to the input
        "strength": Limit(0, 1, low_open=True),  # img2img: the share of the schedule re-run
        "eta": Limit(0, 2),  # Imagic's interpolation weight (the paper's grid ends at 1.6)
        "amount": Limit(-10, 10),  # style theta; pictures break down outside [-1, 2] already
        "hold_common": Limit(0, 1),  # a fraction of the steps
        "layout_steps": Limit(0, MAX_STEPS - 1, integer=True),
        "embed_steps": Limit(0, MAX_TRAIN_STEPS, integer=True),
        "tune_steps": Limit(0, MAX_TRAIN_STEPS, integer=True),
        "lr_embed": Limit(0, 1, low_open=True),
        "lr_tune": Limit(0, 1, low_open=True),
        "lora_rank": Limit(1, 1024, integer=True),
        "batch_size": Limit(1, 256, integer=True),
    }
)


def check_number(name: str, value: Any, limit: Limit | None = None) -> None:
    """Refuse ``value`` unless it is a finite number (a whole one where the limit says so)
    inside ``LIMITS[name]`` (or ``limit``), naming the setting and its range."""
    limit = limit or LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, Real):
        raise RetouchError(f"{name} must be {limit.describe()}, got {value!r}")
    if not math.isfinite(value):
        raise RetouchError(f"{name} must be a finite number, got {value!r}; NaN and infinity are not settings")
    too_low = value <= limit.low if limit.low_open else value < limit.low
    if too_low or value > limit.high or (limit.integer and value != int(value)):
        raise RetouchError(f"{name} must be {limit.describe()}, got {value!r}")


def check_numbers(values: Mapping[str, Any], aliases: Mapping[str, str] | None = None) -> None:
    """``check_number`` on every field of ``values`` (a job, a recipe, a call's arguments) that
    has a limit; ``None`` (the default) and the word ``"auto"`` pass. ``aliases`` maps a field to
    the limit it takes (a style recipe's old ``"strength"`` is its ``"amount"``)."""
    aliases = aliases or {}
    for name, value in values.items():
        limit_name = aliases.get(name, name)
        if limit_name in LIMITS and value is not None and value != "auto":
            check_number(name, value, LIMITS[limit_name])
    width, height = values.get("width"), values.get("height")
    if isinstance(width, int) and isinstance(height, int) and width * height > MAX_PIXELS:
        raise RetouchError(
            f"{width}x{height} is {width * height / 1e6:.1f} megapixels; the limit is {MAX_PIXELS / 1e6:.1f}"
        )


def check_size(width: int, height: int) -> None:
    """A picture to generate: a multiple of 8 pixels a side (the VAE's factor), at most
    ``MAX_SIDE`` a side and ``MAX_PIXELS`` in all, the limit on pictures to edit."""
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 8 or value % 8:
            raise RetouchError(f"{name} must be a positive multiple of 8, got {value}")
    check_numbers({"width": width, "height": height})
