"""Access to a loaded pipeline's components that every method shares."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from diffusers import StableDiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin


@contextmanager
def scheduler_swapped(pipe: StableDiffusionPipeline, scheduler: SchedulerMixin) -> Iterator[None]:
    """Use ``scheduler`` for one call; the pipeline keeps its own config for the next."""
    original = pipe.scheduler
    pipe.scheduler = scheduler
    try:
        yield
    finally:
        pipe.scheduler = original


def pipe_name(pipe: StableDiffusionPipeline) -> str:
    """The name or path the pipeline was loaded from, as recipes record it."""
    return str(getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path") or "unknown")
