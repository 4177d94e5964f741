"""Tasks by name: what a job's (or a recipe's) ``"task"`` field dispatches to.

A task is a function ``(ctx: TaskContext, job: dict) -> TaskOutput``. It computes images
and recipes and writes nothing: ``run_batch`` and ``replay`` do all file writing, atomically.
A task may also register a check ``(job: dict) -> None`` that refuses a bad job without the
model (fields, types, counts, sizes, finite numbers): ``replay`` runs it before any work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from retouch.errors import RetouchError
from retouch.models.adapter_options import take_lora_tags
from retouch.models.adapters import adapters_applied, check_record_fields
from retouch.models.loading import LoadedModel

DEFAULT_TASK = "generate"
# Fields any job may carry that choose adapters rather than feed its task: concept folders,
# "FILE[:TOKEN]" embeddings, "FILE[:SCALE]" LoRAs, the folder <lora:name:w> tags are found in, and
# the records a recipe keeps (``LoadedModel.adapters``), which replay re-applies.
ADAPTER_FIELDS: dict[str, type] = {
    "concepts": list, "embeddings": list, "loras": list, "lora_dir": str, "adapters": list
}
PROMPT_FIELDS: tuple[str, ...] = ("prompt", "negative_prompt", "source", "target", "prompt_a", "prompt_b")


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
CheckFn = Callable[[dict[str, Any]], None]


class TaskRegistry:
    """Maps task names to task functions.

    Example::

        registry = default_registry()

        @registry.register("edit")
        def edit_task(ctx: TaskContext, job: dict) -> TaskOutput: ...
    """

    def __init__(self) -> None:
        self._tasks: dict[str, TaskFn] = {}
        self._checks: dict[str, CheckFn] = {}

    def register(
        self, name: str, fn: TaskFn | None = None, *, check: CheckFn | None = None
    ) -> Callable[[TaskFn], TaskFn] | TaskFn:
        """``register(name, fn)``, or ``@register(name)`` as a decorator; ``check`` validates a
        job of this task without running it."""

        def add(task: TaskFn) -> TaskFn:
            if name in self._tasks:
                raise ValueError(f"task {name!r} is already registered")
            self._tasks[name] = task
            if check is not None:
                self._checks[name] = check
            return task

        return add(fn) if fn is not None else add

    def names(self) -> tuple[str, ...]:
        return tuple(self._tasks)

    def get(self, name: str) -> TaskFn:
        if name not in self._tasks:
            raise RetouchError(f"unknown task {name!r}; known tasks: {', '.join(self._tasks)}")
        return self._tasks[name]

    def check(self, job: dict[str, Any]) -> None:
        """Refuse a job whose task is unknown or whose task's check fails; runs nothing."""
        task = self._task_name(job)
        self.get(task)
        _, job = split_adapter_fields(job)
        if task in self._checks:
            self._checks[task](job)

    def run(self, ctx: TaskContext, job: dict[str, Any]) -> TaskOutput:
        """Dispatch ``job`` on its ``"task"`` field (``"generate"`` when absent), with the job's
        adapters applied for it alone."""
        task = self.get(self._task_name(job))
        adapters, job = split_adapter_fields(job)
        if not adapters:
            return task(ctx, job)
        with adapters_applied(ctx.model, **adapters) as model:
            if model is not ctx.model and job.get("model") == ctx.model.name:
                job = {**job, "model": model.name}  # a DreamBooth concept is the model now
            return task(replace(ctx, model=model), job)

    @staticmethod
    def _task_name(job: dict[str, Any]) -> str:
        task = job.get("task", DEFAULT_TASK)
        if not isinstance(task, str):
            raise RetouchError(f"'task' must be a string, got {task!r}")
        return task


def split_adapter_fields(job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(adapters, rest)``: the keyword arguments of ``adapters_applied`` a job's adapter fields
    make (``<lora:name:w>`` tags taken out of its prompts, found in ``lora_dir``), and the job without them."""
    for name, kind in ADAPTER_FIELDS.items():
        value = job.get(name)
        if value is not None and (not isinstance(value, kind) or (kind is list and name != "adapters" and not all(
            isinstance(item, str) for item in value
        ))):
            raise RetouchError(f"field {name!r} has the wrong type: {value!r}")
    for record in job.get("adapters") or []:
        check_record_fields(record, "the job")
    rest = {key: value for key, value in job.items() if key not in ADAPTER_FIELDS}
    loras = list(job.get("loras") or [])
    for name in PROMPT_FIELDS:
        if isinstance(rest.get(name), str):
            rest[name], tagged = take_lora_tags(rest[name], job.get("lora_dir"))
            loras += tagged
    adapters = {
        "concepts": job.get("concepts") or [],
        "embeddings": job.get("embeddings") or [],
        "loras": loras,
        "records": job.get("adapters") or [],
    }
    return ({} if not any(adapters.values()) else adapters), rest


def default_registry() -> TaskRegistry:
    """A registry holding every built-in task. New tasks are added here."""
    from retouch.batch.edit_tasks import check_edit_job, edit_task
    from retouch.batch.imagic_tasks import check_imagic_job, imagic_task
    from retouch.batch.instruct_tasks import check_instruct_job, instruct_task
    from retouch.batch.steer_tasks import check_interpolate_job, check_style_job, interpolate_task, style_task
    from retouch.batch.tasks import check_generate_job, generate_task

    registry = TaskRegistry()
    registry.register("generate", generate_task, check=check_generate_job)
    registry.register("style", style_task, check=check_style_job)
    registry.register("interpolate", interpolate_task, check=check_interpolate_job)
    registry.register("edit", edit_task, check=check_edit_job)
    registry.register("imagic", imagic_task, check=check_imagic_job)
    registry.register("instruct", instruct_task, check=check_instruct_job)
    return registry
