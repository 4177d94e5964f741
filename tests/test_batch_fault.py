"""A batch of edit jobs killed with SIGKILL at seeded random points, then resumed: every job is
finished exactly once, the outputs are byte-identical to an uninterrupted run's, and no temporary
file is left behind."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
JOBS = 6
SOURCE = "a large red circle on a blue background"
TARGETS = [
    "a large green circle on a blue background",
    "a large red circle on a yellow background",
    "a large red square on a blue background",
]


def env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }


def write_jobs(folder: Path) -> Path:
    picture = folder / "in.png"
    Image.new("RGB", (32, 32), (30, 40, 200)).save(picture)
    jobs = [
        {
            "id": f"e{k}",
            "task": "edit",
            "image": str(picture),
            "source": SOURCE,
            "target": TARGETS[k % 3],
            "seed": k,
            "steps": 3,
        }
        for k in range(JOBS)
    ]
    path = folder / "jobs.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


def batch(jobs: Path, out: Path, model: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "retouch",
        "--quiet",
        "batch",
        str(jobs),
        "--out",
        str(out),
        "--model",
        str(model),
        "--device",
        "cpu",
    ]
    return subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finished(out: Path) -> dict[str, tuple[int, int]]:
    """Each finished job's report file with its inode and modification time."""
    reports = {}
    for k in range(JOBS):
        path = out / f"e{k}.json"
        if path.exists() and json.loads(path.read_text()).get("status") != "failed":
            stat = path.stat()
            reports[path.name] = (stat.st_ino, stat.st_mtime_ns)
    return reports


def kill_after(run: subprocess.Popen, out: Path, reports: int, extra_s: float) -> None:
    """SIGKILL the run once ``reports`` jobs are finished, plus ``extra_s`` into the next one."""
    deadline = time.monotonic() + 240
    while len(finished(out)) < reports and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(extra_s)
    run.send_signal(signal.SIGKILL)
    run.wait()


def contents(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.iterdir()) if path.suffix == ".png"}


@pytest.mark.parametrize("seed", [0])
def test_kill_9_at_random_points_then_resume(tiny_model_dir, tmp_path, seed):
    jobs = write_jobs(tmp_path)
    reference = tmp_path / "reference"
    run = batch(jobs, reference, tiny_model_dir)
    assert run.wait(timeout=600) == 0, run.stderr.read()[-2000:]

    rng = random.Random(seed)
    points = sorted(rng.sample(range(JOBS), 3))  # kill while job points[i] runs
    out = tmp_path / "out"
    for reports in points:
        before = finished(out) if out.exists() else {}
        kill_after(batch(jobs, out, tiny_model_dir), out, reports, rng.uniform(0.0, 0.4))
        after = finished(out)
        assert {name: after[name] for name in before} == before  # a finished job is never redone
    before = finished(out)
    run = batch(jobs, out, tiny_model_dir)
    assert run.wait(timeout=600) == 0, run.stderr.read()[-2000:]

    after = finished(out)
    assert sorted(after) == [f"e{k}.json" for k in range(JOBS)]
    assert {name: after[name] for name in before} == before
    assert contents(out) == contents(reference)  # byte for byte, recipes included
    leftovers = [p.name for p in out.iterdir() if p.suffix == ".tmp" or p.name.startswith(".")]
    assert leftovers == []
