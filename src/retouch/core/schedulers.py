"""Sampler names -> diffusers schedulers. Every scheduler is diffusers' own."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from retouch.errors import RetouchError
from retouch.io.a1111 import A1111_SAMPLERS

DEFAULT_STEPS = 25  # denoising steps when none are given, for every method

SchedulerName = Literal["lms", "ddim", "euler", "euler-a", "dpm++"]


@dataclass(frozen=True)
class SchedulerSpec:
    cls: type[SchedulerMixin]  # the diffusers scheduler class
    a1111_name: str  # the "Sampler:" name AUTOMATIC1111 writes into PNG parameters


SCHEDULERS: Mapping[str, SchedulerSpec] = MappingProxyType(
    {
        "lms": SchedulerSpec(LMSDiscreteScheduler, A1111_SAMPLERS["lms"]),
        "ddim": SchedulerSpec(DDIMScheduler, A1111_SAMPLERS["ddim"]),
        "euler": SchedulerSpec(EulerDiscreteScheduler, A1111_SAMPLERS["euler"]),
        "euler-a": SchedulerSpec(EulerAncestralDiscreteScheduler, A1111_SAMPLERS["euler-a"]),
        "dpm++": SchedulerSpec(DPMSolverMultistepScheduler, A1111_SAMPLERS["dpm++"]),
    }
)
SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULERS)


def scheduler_spec(name: str) -> SchedulerSpec:
    try:
        return SCHEDULERS[name]
    except KeyError:
        raise RetouchError(
            f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULER_NAMES)}"
        ) from None


def make_scheduler(name: str, config: Mapping[str, Any]) -> SchedulerMixin:
    """Build scheduler ``name`` from a pipeline's scheduler config (betas, timestep spacing...)."""
    return scheduler_spec(name).cls.from_config(config)
