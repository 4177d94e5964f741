"""``run_batch``: many jobs, one model load, resumable, optionally split across processes.

For each job ``DIR/{id}.png`` (``{id}-{k}.png`` for several images, plus ``{id}{suffix}.png``
for a task's extra named images) and then the report ``DIR/{id}.json`` are written atomically;
a job is finished once its report exists, so a re-run after a crash or ``kill -9`` skips it.
A failed job writes ``DIR/{id}.error.json``. Ids whose files could overwrite another job's
(``x`` and ``x.error``, ``e`` and ``e.mask``) are refused before anything runs.

Several runs may share ``DIR`` (a second ``retouch batch`` started on the same folder): each job
is locked (``DIR/.{id}.lock``, an OS lock released when its process dies) while one run works on
it, and the other runs skip it, so every job runs once in all.
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tqdm.auto import tqdm

from retouch.batch.registry import TaskContext, TaskRegistry, default_registry
from retouch.errors import RetouchError
from retouch.io.atomic import atomic_write_json, check_writable, remove_stale_temp_files
from retouch.io.locks import FileLock
from retouch.io.png import save_png
from retouch.metrics.report import json_safe
from retouch.models.loading import DEFAULT_INSTRUCT_MODEL, DEFAULT_MODEL, LoadedModel, load_model

if TYPE_CHECKING:
    from accelerate import PartialState

_ID_RE = re.compile(r"^[A-Za-z0-9_][\w.-]*$")  # a safe file name: no slashes, no leading dot
# A job writes {id}.json, {id}.error.json, {id}.png or {id}-{k}.png, and {id}{suffix}.png for
# each extra image, whose suffix must match EXTRA_SUFFIX_RE. So job b's files can be job a's
# exactly when b = a + one of these tails:
_CLASHING_TAIL_RE = re.compile(r"\.error|\.mask|\.layer|[-_]\d+")
EXTRA_SUFFIX_RE = re.compile(r"\.mask|\.layer|_\d+")  # an edit's mask and layer, a sweep's or path's frames
BATCH_LOCK = ".retouch-batch.lock"  # shared by every run on a folder; exclusive to clean up


@dataclass
class Job:
    line: int  # 1-based line number in the JSONL file
    id: str
    recipe: dict[str, Any] | None  # None when the line could not be parsed
    error: str | None = None  # why the line could not be parsed


@dataclass
class JobResult:
    id: str
    line: int
    status: Literal["ok", "failed", "skipped"]  # skipped: finished by an earlier run
    files: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    note: str | None = None  # e.g. why a job was skipped: another run on the folder had it


@dataclass
class BatchSummary:
    results: list[JobResult]

    def count(self, status: str) -> int:
        return sum(result.status == status for result in self.results)

    @property
    def failed(self) -> int:
        return self.count("failed")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.count("ok"),
            "failed": self.failed,
            "skipped": self.count("skipped"),
            "jobs": [asdict(result) for result in self.results],
        }


EXAMPLE_JOB = '{"id": "cat", "prompt": "a red circle", "seed": 1}'


def read_jobs(jobs_path: str | os.PathLike[str]) -> list[Job]:
    """Parse a JSONL file; a bad line becomes a Job with ``error`` set, the others go on.

    Raises:
        RetouchError: the file is missing or unreadable, or two jobs share an id.
    """
    jobs_path = Path(jobs_path)
    if not jobs_path.is_file():
        raise RetouchError(f"jobs file not found: {jobs_path}")
    try:
        lines = jobs_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RetouchError(f"cannot read jobs file {jobs_path}: {e}") from e
    jobs = [job for number, line in enumerate(lines, start=1) if (job := _parse_line(number, line))]
    if not jobs:
        raise RetouchError(f"{jobs_path} holds no jobs; write one JSON object per line, e.g. {EXAMPLE_JOB}")
    check_ids_apart(jobs, jobs_path)
    return jobs


def check_ids_apart(jobs: list[Job], jobs_path: str | os.PathLike[str]) -> None:
    """Refuse ids that name the same file: equal ones, ones equal but for case (one file on
    macOS and Windows), and ids one of whose files is another's (``x`` and ``x.error``)."""
    owners: dict[str, Job] = {}
    for job in jobs:
        other = owners.setdefault(job.id.casefold(), job)
        if other is not job:
            same = "duplicate job id" if other.id == job.id else "job ids that differ only in case,"
            raise RetouchError(
                f"{same} {job.id!r} on lines {other.line} and {job.line} of {jobs_path}; "
                "ids name the output files, so each must be unique"
            )
    for job in jobs:
        key = job.id.casefold()
        for i in range(1, len(key)):
            other = owners.get(key[:i])
            if other is not None and _CLASHING_TAIL_RE.fullmatch(key[i:]):
                clash = f"{job.id}.json" if key[i:] == ".error" else f"{job.id}.png"
                raise RetouchError(
                    f"job id {job.id!r} (line {job.line}) and job id {other.id!r} (line {other.line}) "
                    f"would both write {clash}; rename one of them"
                )


def _parse_line(number: int, line: str) -> Job | None:
    if not line.strip():
        return None
    fallback_id = f"line-{number}"
    try:
        recipe = json.loads(line)
    except json.JSONDecodeError as e:
        return Job(number, fallback_id, None, f"line {number}: not valid JSON ({e})")
    if not isinstance(recipe, dict):
        return Job(number, fallback_id, None, f"line {number}: a job must be a JSON object")
    job_id = recipe.get("id", fallback_id)
    if not isinstance(job_id, str) or not _ID_RE.match(job_id):
        error = f"line {number}: bad id {job_id!r}; use letters, digits, '.', '_' and '-' only"
        return Job(number, fallback_id, None, error)
    return Job(number, job_id, recipe)


def report_path(out_dir: Path, job_id: str) -> Path:
    return out_dir / f"{job_id}.json"


def error_path(out_dir: Path, job_id: str) -> Path:
    return out_dir / f"{job_id}.error.json"


def run_batch(
    jobs_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    model: str | LoadedModel | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
    config: str | None = None,
    registry: TaskRegistry | None = None,
    progress: bool = False,
    state: PartialState | None = None,
) -> BatchSummary:
    """Run every unfinished job of ``jobs_path`` into ``out_dir``.

    Args:
        model: loaded once, and only when some job of this process is unfinished; None: the
            bundled instruct model when every job is an ``instruct`` job, else the default model.
        registry: the tasks jobs may name; ``default_registry()`` when None.
        state: accelerate's ``PartialState`` under ``accelerate launch``: process ``i`` of ``n``
            runs jobs ``i, i + n, ...`` and every process returns the summary of all jobs.
    """
    out_dir = Path(out_dir)
    registry = registry or default_registry()
    process_index, num_processes = (state.process_index, state.num_processes) if state else (0, 1)
    jobs = read_jobs(jobs_path)
    model = default_model(jobs) if model is None else model
    check_writable(out_dir)
    started = time.time()
    folder_lock = join_folder(out_dir, clean=process_index == 0)
    if num_processes > 1:
        state.wait_for_everyone()  # no process writes before the stale files are gone
    try:
        # Split the full list, not the unfinished one: every process then agrees on the split.
        mine = jobs[process_index::num_processes]
        pending = [job for job in mine if not is_finished(out_dir, job.id)]
        waiting = {job.id for job in pending}
        results = [JobResult(job.id, job.line, "skipped") for job in mine if job.id not in waiting]
        ctx: TaskContext | None = None
        for job in tqdm(pending, desc="jobs", disable=not progress or process_index != 0):
            lock = FileLock(out_dir / f".{job.id}.lock")
            if not lock.acquire():
                results.append(JobResult(job.id, job.line, "skipped", note="another run on this folder has it"))
                continue
            try:
                if (done := done_elsewhere(out_dir, job, started)) is not None:
                    results.append(done)
                    continue
                if job.recipe is not None and ctx is None:
                    loaded = model if isinstance(model, LoadedModel) else load_model(model, device, dtype, config)
                    ctx = TaskContext(loaded, progress=progress and num_processes == 1)
                results.append(_run_job(ctx, registry, job, out_dir, process_index))
            finally:
                lock.release(remove=True)
    finally:
        leave_folder(folder_lock)

    if num_processes > 1:
        from accelerate.utils import gather_object

        results = gather_object(results)
    return BatchSummary(sorted(results, key=lambda result: result.line))


def default_model(jobs: list[Job]) -> str:
    """The bundled instruct model for a batch of ``instruct`` jobs alone (recipes included), else
    the bundled default model."""
    tasks = {job.recipe.get("task") for job in jobs if job.recipe is not None}
    return DEFAULT_INSTRUCT_MODEL if tasks == {"instruct"} else DEFAULT_MODEL


def join_folder(out_dir: Path, clean: bool) -> FileLock:
    """Hold the folder's shared lock while this run writes there. With ``clean``, first take it
    alone if no other run holds it: then every temporary file there is a killed writer's and
    goes (another live run's temporary files are its files being written)."""
    lock = FileLock(out_dir / BATCH_LOCK)
    if clean and lock.acquire():
        remove_stale_temp_files(out_dir)
        lock.share()
    else:
        lock.acquire(shared=True, blocking=True)
    return lock


def leave_folder(lock: FileLock) -> None:
    """Let go of the folder; the last run to leave removes the lock file."""
    lock.release(remove=lock.try_exclusive())


def is_finished(out_dir: Path, job_id: str) -> bool:
    """The job's report exists, and is not another job's file: a report names its job's id, and
    an error file written by an older version for a clashing id says ``"status": "failed"``."""
    path = report_path(out_dir, job_id)
    if not path.exists():
        return False
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # unreadable: run the job again, its report is written anew
    if not isinstance(report, dict):
        return False
    return report.get("id", job_id) == job_id and report.get("status") != "failed"


def done_elsewhere(out_dir: Path, job: Job, started: float) -> JobResult | None:
    """The job's result when another run on the folder finished it, or failed it since ``started``
    (it is tried again by a later run, not by this concurrent one), else None."""
    if is_finished(out_dir, job.id):
        return JobResult(job.id, job.line, "skipped", note="another run on this folder finished it")
    error = error_path(out_dir, job.id)
    try:
        failed_here_and_now = error.stat().st_mtime >= started
    except FileNotFoundError:
        return None
    if not failed_here_and_now:
        return None
    try:
        message = json.loads(error.read_text(encoding="utf-8")).get("error")
    except (OSError, ValueError, AttributeError):
        message = None
    return JobResult(
        job.id, job.line, "failed", [error.name], message or "failed", note="another run on this folder failed it"
    )


def _run_job(
    ctx: TaskContext | None, registry: TaskRegistry, job: Job, out_dir: Path, process_index: int
) -> JobResult:
    start = time.perf_counter()
    try:
        if job.recipe is None or ctx is None:
            raise RetouchError(job.error or "job could not be parsed")
        output = registry.run(ctx, job.recipe)
        task_seconds = time.perf_counter() - start
        names = (
            [f"{job.id}.png"]
            if len(output.images) == 1
            else [f"{job.id}-{k}.png" for k in range(len(output.images))]
        )
        for image, recipe, name in zip(output.images, output.recipes, names, strict=True):
            save_png(image, out_dir / name, recipe)
        for suffix, (image, recipe) in output.extra_images.items():
            if not EXTRA_SUFFIX_RE.fullmatch(suffix):
                raise RetouchError(f"task output suffix {suffix!r} could clash with another job's files")
            save_png(image, out_dir / f"{job.id}{suffix}.png", recipe)
            names.append(f"{job.id}{suffix}.png")
        report = {
            "id": job.id,
            "line": job.line,
            "task": output.recipe.get("task"),
            "status": "ok",
            "images": names,
            "recipe": output.recipe,
            **output.report,
            "timings": {
                **output.report.get("timings", {}),  # a task's own timings, e.g. an edit's mask_s
                "task_s": task_seconds,
                "total_s": time.perf_counter() - start,
            },
            "device": str(ctx.model.device),
            "dtype": str(ctx.model.dtype).removeprefix("torch."),
            "process_index": process_index,
        }
        atomic_write_json(report_path(out_dir, job.id), report)  # last: marks the job finished
        error_path(out_dir, job.id).unlink(missing_ok=True)
        return JobResult(
            job.id, job.line, "ok", [*names, f"{job.id}.json"], None, time.perf_counter() - start
        )
    except Exception as e:  # one bad job must not stop the batch; its error file says why
        message = str(e) if isinstance(e, RetouchError) else f"{type(e).__name__}: {e}"
        error = {
            "id": job.id,
            "line": job.line,
            "status": "failed",
            "error": message,
            "job": job.recipe,
            **({} if isinstance(e, RetouchError) else {"traceback": traceback.format_exc()}),
        }
        atomic_write_json(error_path(out_dir, job.id), json_safe(error))  # a job's NaN becomes null
        return JobResult(
            job.id, job.line, "failed", [f"{job.id}.error.json"], message, time.perf_counter() - start
        )
