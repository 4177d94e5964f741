"""Timesteps and scheduler-step arguments that every img2img-style method shares."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from retouch.errors import RetouchError


def img2img_timesteps(scheduler: SchedulerMixin, steps: int, strength: float) -> torch.Tensor:
    """The last ``strength`` fraction of the schedule, as diffusers' img2img takes it
    (``timesteps[t_start:]``); ``scheduler.set_timesteps`` must have been called."""
    init_steps = min(int(steps * strength), steps)
    if init_steps < 1:
        raise RetouchError(
            f"strength {strength} with {steps} steps runs no denoising step; "
            f"raise --strength to at least {1 / steps:.3g} or use more --steps"
        )
    return scheduler.timesteps[(steps - init_steps) * scheduler.order :]


def step_kwargs(scheduler: SchedulerMixin, generator: torch.Generator | None) -> dict[str, Any]:
    """``generator`` for the schedulers whose step draws noise (ancestral ones); LMS takes none."""
    accepted = inspect.signature(scheduler.step).parameters
    return {"generator": generator} if "generator" in accepted else {}
