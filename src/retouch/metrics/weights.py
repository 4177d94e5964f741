"""Where metric networks' weight files live, and how a missing one is reported.

Metric networks (LPIPS, Inception for FID/KID, CLIP) never download: each is a local file or
folder, passed by flag or found under the metrics folder under a fixed name.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from retouch.errors import RetouchError

METRICS_DIR_ENV = "RETOUCH_METRICS_DIR"


def metrics_dir() -> Path:
    """``$RETOUCH_METRICS_DIR``, else ``~/.cache/retouch/metrics``: default home of metric weights."""
    env = os.environ.get(METRICS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return cache / "retouch" / "metrics"


class MissingWeights(RetouchError):
    """A metric's network is not on this machine; the message names the file and where it goes."""


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file, or a ``.pth``/``.pt``/``.bin`` loaded weights-only."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeights(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error type
            raise RetouchError(f"{path} is not a valid .safetensors file ({e})") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise RetouchError(
            f"cannot read {path} as plain tensors ({e}); convert it to .safetensors on a machine you trust"
        ) from e
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise RetouchError(f"{path} holds a {type(state).__name__}, not a dict of tensors")
    return {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
