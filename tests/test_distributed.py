"""`accelerate launch` with two CPU processes splits a batch between them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accelerate_launch_splits_jobs_over_two_cpu_processes(tiny_model_dir, tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate, "accelerate's launcher is not installed next to this python"
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        "".join(json.dumps({"id": f"j{i}", "prompt": "x", "steps": 1, "seed": i}) + "\n" for i in range(4))
    )
    out = tmp_path / "out"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    # --multi_gpu picks accelerate's torchrun launcher; with no GPU, retouch asks for CPU gloo processes.
    # (`--cpu --num_processes 2` would start one process: accelerate needs MPI for several CPU ones.)
    command = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "retouch", "--json", "--quiet",
        "batch", str(jobs), "--out", str(out), "--model", str(tiny_model_dir),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["ok"] == 4
    processes = {json.loads((out / f"j{i}.json").read_text())["process_index"] for i in range(4)}
    assert processes == {0, 1}
