"""What the personalization tests share: the cases every method is trained as, random pictures to
train on, and plain diffusers drawing from the saved files in a subprocess that never imports retouch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PLAIN_LOADER = Path(__file__).parent / "concept_plain_load.py"
CASES = {  # name -> (method, options)
    "textual-inversion": ("textual-inversion", {"num_vectors": 2}),
    "lora": ("lora", {}),
    "dreambooth": ("dreambooth", {}),
    "dreambooth-lora": ("dreambooth", {"lora": True, "train_text_encoder": True, "conv": True}),  # LoCon too
    "custom-diffusion": ("custom-diffusion", {}),
}


def write_pictures(folder: Path, count: int, side: int = 32, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def draw_plain(jobs: list[dict], folder: Path) -> dict[str, np.ndarray]:
    """Each job's picture drawn by ``concept_plain_load.py`` in one subprocess; the LoRA cases'
    kohya copies are drawn too (``NAME-kohya``)."""
    jobs = jobs + [{**job, "name": job["name"] + "-kohya", "lora_role": "lora_kohya"}
                   for job in jobs if "lora" in job["name"]]
    (folder / "jobs.json").write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # the same float sums as this process
    subprocess.run([sys.executable, str(PLAIN_LOADER), str(folder / "jobs.json"), str(folder / "out.npz")],
                   check=True, env=env, capture_output=True)
    return dict(np.load(folder / "out.npz"))
