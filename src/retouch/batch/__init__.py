"""Jobs: the task registry, ``run_batch`` over JSONL files, and ``replay`` of PNG recipes."""

from retouch.batch.registry import TaskContext, TaskFn, TaskOutput, TaskRegistry, default_registry
from retouch.batch.replay import ReplayResult, replay
from retouch.batch.runner import BatchSummary, JobResult, read_jobs, run_batch

__all__ = [
    "BatchSummary",
    "JobResult",
    "ReplayResult",
    "TaskContext",
    "TaskFn",
    "TaskOutput",
    "TaskRegistry",
    "default_registry",
    "read_jobs",
    "replay",
    "run_batch",
]
