"""retouch: text-guided image generation and editing with latent diffusion.

The Python API. Names load on first use, so ``import retouch.worlds`` stays light::

    import retouch

    model = retouch.load_model("shapes-64")
    result = retouch.generate(model, "a large red circle on a blue background", seed=42)
    result.images[0].save("circle.png")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from retouch.version import __version__

if TYPE_CHECKING:
    from retouch.batch import (
        BatchSummary,
        ReplayResult,
        TaskContext,
        TaskOutput,
        TaskRegistry,
        default_registry,
        replay,
        run_batch,
    )
    from retouch.core.generate import GenerateResult, generate
    from retouch.core.schedulers import SCHEDULER_NAMES
    from retouch.core.weighting import encode_weighted_prompt
    from retouch.edit.imagic import ImagicResult, imagic
    from retouch.errors import RetouchError
    from retouch.io.images import load_image
    from retouch.io.png import read_recipe, save_png
    from retouch.models.adapters import adapters_applied, apply_adapters
    from retouch.models.loading import LoadedModel, load_model
    from retouch.steer.interpolate import InterpolateResult, interpolate
    from retouch.steer.slerp import slerp
    from retouch.steer.style import SweepResult, style_embeddings, style_sweep, stylize

_EXPORTS = {
    "BatchSummary": "retouch.batch",
    "ReplayResult": "retouch.batch",
    "TaskContext": "retouch.batch",
    "TaskOutput": "retouch.batch",
    "TaskRegistry": "retouch.batch",
    "default_registry": "retouch.batch",
    "replay": "retouch.batch",
    "run_batch": "retouch.batch",
    "GenerateResult": "retouch.core.generate",
    "generate": "retouch.core.generate",
    "SCHEDULER_NAMES": "retouch.core.schedulers",
    "ImagicResult": "retouch.edit.imagic",
    "imagic": "retouch.edit.imagic",
    "RetouchError": "retouch.errors",
    "load_image": "retouch.io.images",
    "read_recipe": "retouch.io.png",
    "save_png": "retouch.io.png",
    "adapters_applied": "retouch.models.adapters",
    "apply_adapters": "retouch.models.adapters",
    "LoadedModel": "retouch.models.loading",
    "load_model": "retouch.models.loading",
    "InterpolateResult": "retouch.steer.interpolate",
    "interpolate": "retouch.steer.interpolate",
    "slerp": "retouch.steer.slerp",
    "SweepResult": "retouch.steer.style",
    "style_embeddings": "retouch.steer.style",
    "style_sweep": "retouch.steer.style",
    "stylize": "retouch.steer.style",
    "encode_weighted_prompt": "retouch.core.weighting",
}
__all__ = [
    "SCHEDULER_NAMES",
    "BatchSummary",
    "GenerateResult",
    "ImagicResult",
    "InterpolateResult",
    "LoadedModel",
    "ReplayResult",
    "RetouchError",
    "SweepResult",
    "TaskContext",
    "TaskOutput",
    "TaskRegistry",
    "__version__",
    "adapters_applied",
    "apply_adapters",
    "default_registry",
    "encode_weighted_prompt",
    "generate",
    "imagic",
    "interpolate",
    "load_image",
    "load_model",
    "read_recipe",
    "replay",
    "run_batch",
    "save_png",
    "slerp",
    "style_embeddings",
    "style_sweep",
    "stylize",
]


# Subpackages reachable as attributes without an import: ``retouch.edit.edit(model, ...)``.
_SUBPACKAGES = ("edit",)


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"retouch.{name}")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'retouch' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
