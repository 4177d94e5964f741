"""Crash-safe training checkpoints: weights in safetensors, optimizer state loaded weights-only.

A checkpoint is a folder ``step-{N}`` written whole under a temporary name and renamed into place; a
``latest`` file, itself replaced atomically, names the newest one. A run killed with ``kill -9`` at
any moment resumes from the last complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

TRAIN_LOCK = ".retouch-train.lock"  # in the output folder while a trainer writes there


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    folder: Path, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any], keep: int = 2
) -> Path:
    """Write weights (safetensors) and trainer state (optimizer etc.) for ``step``."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step}"
    tmp = folder / f".step-{step}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, tmp / "weights.safetensors")
    torch.save(state, tmp / "state.pt")
    (tmp / "step.json").write_text(json.dumps({"step": step}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _atomic_text(folder / "latest", final.name)
    done = sorted((p for p in folder.glob("step-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[1]))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
    """The newest complete checkpoint in ``folder`` as (step, weights, state), or None."""
    latest = folder / "latest"
    if not latest.is_file():
        return None
    path = folder / latest.read_text().strip()
    step = json.loads((path / "step.json").read_text())["step"]
    weights = load_file(path / "weights.safetensors")
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    return int(step), weights, state
