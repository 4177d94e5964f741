"""Shared fixtures: one tiny random Stable Diffusion model for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# No test may reach the network: hub ids must fail fast and offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the web UI's tests: no calls home

# One thread: on a small shared CPU, two threads that wait on each other stall for seconds.
torch.set_num_threads(1)

STEPS = 2  # denoising steps in tests: enough to run every code path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random pipeline saved as a diffusers folder (32 x 32 images)."""
    from retouch.models.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    """The tiny model loaded once, on CPU in float32."""
    from retouch.models.loading import load_model

    return load_model(str(tiny_model_dir), device="cpu")
