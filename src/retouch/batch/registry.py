"""Tasks by name: what a job's (or a recipe's) ``"task"`` field dispatches to.

A task is a function ``(ctx: TaskContext, job: dict) -> TaskOutput``. It computes images
and recipes and writes nothing: ``run_batch`` and ``replay`` do all file writing, atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from retouch.errors import RetouchError
from retouch.models.loading import LoadedModel

DEFAULT_TASK = "generate"


@dataclass
class TaskContext:
    """What every task gets besides its job."""

    model: LoadedModel  # loaded once per batch
    progress: bool = False  # show tqdm bars


@dataclass
class TaskOutput:
    images: list[Image.Image]
    recipes: list[dict[str, Any]]  # one per image, written into its PNG; each replays that image
    recipe: dict[str, Any]  # the job with every default filled in, for the report
    report: dict[str, Any] = field(default_factory=dict)  # task-specific report fields
    # more named images: suffix -> (image, recipe), written as {id}{suffix}.png after the images above
    extra_images: dict[str, tuple[Image.Image, dict[str, Any]]] = field(default_factory=dict)


TaskFn = Callable[[TaskContext, dict[str, Any]], TaskOutput]


class TaskRegistry:
    """Maps task names to task functions.

    Example::

        registry = default_registry()

        @registry.register("edit")
        def edit_task(ctx: TaskContext, job: dict) -> TaskOutput: ...
    """

    def __init__(self) -> None:
        self._tasks: dict[str, TaskFn] = {}

    def register(self, name: str, fn: TaskFn | None = None) -> Callable[[TaskFn], TaskFn] | TaskFn:
        """``register(name, fn)``, or ``@register(name)`` as a decorator."""

        def add(task: TaskFn) -> TaskFn:
            if name in self._tasks:
                raise ValueError(f"task {name!r} is already registered")
            self._tasks[name] = task
            return task

        return add(fn) if fn is not None else add

    def names(self) -> tuple[str, ...]:
        return tuple(self._tasks)

    def get(self, name: str) -> TaskFn:
        if name not in self._tasks:
            raise RetouchError(f"unknown task {name!r}; known tasks: {', '.join(self._tasks)}")
        return self._tasks[name]

    def run(self, ctx: TaskContext, job: dict[str, Any]) -> TaskOutput:
        """Dispatch ``job`` on its ``"task"`` field (``"generate"`` when absent)."""
        task = job.get("task", DEFAULT_TASK)
        if not isinstance(task, str):
            raise RetouchError(f"'task' must be a string, got {task!r}")
        return self.get(task)(ctx, job)


def default_registry() -> TaskRegistry:
    """A registry holding every built-in task. New tasks are added here."""
    from retouch.batch.edit_tasks import edit_task
    from retouch.batch.imagic_tasks import imagic_task
    from retouch.batch.steer_tasks import interpolate_task, style_task
    from retouch.batch.tasks import generate_task

    registry = TaskRegistry()
    registry.register("generate", generate_task)
    registry.register("style", style_task)
    registry.register("interpolate", interpolate_task)
    registry.register("edit", edit_task)
    registry.register("imagic", imagic_task)
    return registry
