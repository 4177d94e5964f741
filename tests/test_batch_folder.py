"""One output folder, many writers: batch ids whose files would clash are refused, a re-run never
skips a job on another job's file, two batch processes split the jobs, two trainers refuse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from retouch.batch import TaskContext, TaskOutput, TaskRegistry, read_jobs, run_batch
from retouch.cli import main
from retouch.errors import RetouchError

ROOT = Path(__file__).resolve().parents[1]
RECIPE = {"task": "generate", "prompt": "", "seed": 1, "steps": 2, "guidance_scale": 7.5, "scheduler": "ddim",
          "width": 8, "height": 8, "model": "tiny"}


def write_jobs(path: Path, *jobs: dict) -> Path:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


def env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }


@pytest.mark.parametrize(
    ("first", "second", "clash"),
    [
        ("x", "x.error", "x.error.json"),  # x's error file is x.error's report
        ("e", "e.mask", "e.mask.png"),  # edit e's mask is job e.mask's picture
        ("e", "e.layer", "e.layer.png"),
        ("g", "g-1", "g-1.png"),  # g's second image with num_images 2
        ("s", "s_0", "s_0.png"),  # a sweep's or an interpolation's frame 0
        ("A", "a.error", "a.error.json"),  # one file on a case-insensitive file system
    ],
)
def test_ids_whose_files_clash_are_refused(tmp_path, first, second, clash):
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": first, "prompt": "x"}, {"id": second, "prompt": "y"})
    with pytest.raises(RetouchError, match=f"would both write {clash}; rename one"):
        read_jobs(jobs)


def test_ids_equal_but_for_case_are_refused(tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "Cat", "prompt": "x"}, {"id": "cat", "prompt": "y"})
    with pytest.raises(RetouchError, match="differ only in case"):
        read_jobs(jobs)


def test_ids_that_cannot_clash_are_accepted(tmp_path):
    ids = ["x", "x.v2", "x-final", "x_a", "xe", "x.errors", "mask", "e.masks"]
    jobs = write_jobs(tmp_path / "jobs.jsonl", *({"id": i, "prompt": "x"} for i in ids))
    assert [job.id for job in read_jobs(jobs)] == ids


def tiny_picture_registry(calls: list[str], suffix: str | None = None) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.register("generate")
    def picture(ctx: TaskContext, job: dict) -> TaskOutput:
        calls.append(job["id"])
        image, recipe = Image.new("RGB", (8, 8), "red"), {**RECIPE, "prompt": job["prompt"]}
        extra = {suffix: (image, recipe)} if suffix else {}
        return TaskOutput([image], [recipe], recipe, extra_images=extra)

    return registry


def test_rerun_does_not_skip_a_job_on_another_jobs_file(tiny_model, tmp_path):
    """An older folder holds x.error.json, job x's error; job "x.error" must still run."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.error.json").write_text(json.dumps({"id": "x", "status": "failed", "error": "boom"}))
    (out / "y.json").write_text(json.dumps({"id": "y", "status": "ok"}))  # y's own report: finished
    calls: list[str] = []
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "x.error", "prompt": "a"}, {"id": "y", "prompt": "b"})
    summary = run_batch(jobs, out, tiny_model, registry=tiny_picture_registry(calls))
    assert calls == ["x.error"] and [r.status for r in summary.results] == ["ok", "skipped"]
    assert json.loads((out / "x.error.json").read_text())["id"] == "x.error"


def test_a_task_suffix_that_could_clash_fails_its_job(tiny_model, tmp_path):
    calls: list[str] = []
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"id": "a", "prompt": "x"})
    summary = run_batch(jobs, tmp_path / "out", tiny_model, registry=tiny_picture_registry(calls, ".error"))
    assert summary.results[0].status == "failed" and "could clash" in summary.results[0].error
    assert not (tmp_path / "out" / "a.error.png").exists()


def test_a_job_locked_by_another_process_is_left_to_it(tiny_model, tmp_path):
    """A real second process holds job b's lock: this run does a and c, and leaves b alone."""
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from retouch.io.locks import FileLock; "
         "FileLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", str(out / ".b.lock")],
        env=env(), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        calls: list[str] = []
        jobs = write_jobs(tmp_path / "jobs.jsonl", *({"id": i, "prompt": "x"} for i in "abc"))
        summary = run_batch(jobs, out, tiny_model, registry=tiny_picture_registry(calls))
        assert calls == ["a", "c"]
        assert [(r.status, r.note) for r in summary.results][1] == ("skipped", "another run on this folder has it")
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the OS lets go of the lock
        holder.wait()
    summary = run_batch(jobs, out, tiny_model, registry=tiny_picture_registry(calls))
    assert calls == ["a", "c", "b"] and sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_two_batch_processes_on_one_folder_do_each_job_once(tiny_model_dir, tmp_path):
    ids = [f"j{k:02d}" for k in range(12)]
    job = {"prompt": "a red circle", "steps": 6, "seed": 1}
    jobs = write_jobs(tmp_path / "jobs.jsonl", *({"id": i, **job} for i in ids))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "retouch", "--json", "--quiet", "batch", str(jobs), "--out", str(out),
           "--model", str(tiny_model_dir), "--device", "cpu"]
    runs = [subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    summaries = [json.loads(stdout) for stdout, _ in outputs]
    done = sorted(job["id"] for summary in summaries for job in summary["jobs"] if job["status"] == "ok")
    assert done == ids  # every job once in all: none twice, none left out
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{i}.png" for i in ids] + [f"{i}.json" for i in ids])


def test_a_second_trainer_on_a_folder_is_refused(tmp_path, capsys):
    from retouch.io.locks import folder_busy
    from retouch.train.checkpoint import TRAIN_LOCK
    from retouch.train.clip import ClipTrainConfig, train_clip

    recipe = tmp_path / "tiny.json"
    recipe.write_text(json.dumps({
        "vae_channels": [8, 8, 8], "vae_steps": 100000, "vae_batch_size": 2, "vae_crop": 16, "num_latents": 8,
        "text_hidden": 16, "text_layers": 1, "text_heads": 2, "unet_channels": [8, 16, 16], "unet_heads": 2,
    }))
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "retouch", "--quiet", "train", "model", "--recipe", str(recipe),
                              "--output", str(out)], env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while folder_busy(out, TRAIN_LOCK, "x") is None and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        for resume in ([], ["--resume"]):
            argv = ["train", "model", "--recipe", str(recipe), "--output", str(out), *resume]
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"another retouch train is writing to {out} (pid {first.pid})" in err and "Traceback" not in err
        with pytest.raises(RetouchError, match="another retouch train is writing"):
            train_clip(ClipTrainConfig(steps=1), out)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert folder_busy(out, TRAIN_LOCK, "retouch train") is None  # kill -9 left no stale lock
