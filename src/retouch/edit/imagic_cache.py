"""On-disk cache of Imagic's stages A (the optimized embedding) and B (the tuned UNet weights).

An entry is a folder ``{root}/{stage}-{key}/`` with ``weights.safetensors`` and ``meta.json``,
written under a temporary name and renamed into place, so a reader never sees half of one. The
key hashes everything the stage's result depends on: the input's pixels, the target caption,
the model (name and a fingerprint of its weights), the dtype and the stage's settings (stage B's
key includes stage A's). Sampling (stage C) is never cached: other eta values and seeds reuse
an entry and cost only sampling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when a stage's algorithm changes: old entries stop matching
WEIGHTS, META = "weights.safetensors", "meta.json"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/retouch/imagic``, by default ``~/.cache/retouch/imagic``."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "retouch" / "imagic"


def model_fingerprint(pipe: StableDiffusionPipeline) -> str:
    """A hash of the first and last weight tensors of the UNet, text encoder and VAE (their shapes
    and first 4096 values): tells models apart, a retrained folder at the same path included,
    without reading gigabytes."""
    digest = hashlib.sha256()
    for module in (pipe.unet, pipe.text_encoder, pipe.vae):
        params = list(module.parameters())
        for tensor in (params[0], params[-1]):
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def stage_key(parts: dict[str, Any]) -> str:
    text = json.dumps({"cache_version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ImagicCache:
    """Entries under ``root``; ``None`` for ``root`` keeps nothing (every stage recomputes)."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root).expanduser() if root is not None else None

    def path(self, stage: str, key: str) -> Path | None:
        return self.root / f"{stage}-{key}" if self.root is not None else None

    def load(self, stage: str, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """(tensors, meta) of an entry, or ``None`` when absent or unreadable (then recomputed)."""
        folder = self.path(stage, key)
        if folder is None or not (folder / META).is_file():
            return None
        try:
            return load_file(str(folder / WEIGHTS)), json.loads((folder / META).read_text())
        except Exception as e:  # a damaged entry is a miss, not a failure
            logger.warning("ignoring the damaged Imagic cache entry %s (%s); recomputing it", folder, e)
            return None

    def save(self, stage: str, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path | None:
        folder = self.path(stage, key)
        if folder is None:
            return None
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(partial / WEIGHTS))
        (partial / META).write_text(json.dumps(meta, indent=2, default=str))
        shutil.rmtree(folder, ignore_errors=True)  # a damaged entry of the same key
        try:
            os.replace(partial, folder)
        except OSError:  # another process wrote the same entry first: theirs is as good
            shutil.rmtree(partial, ignore_errors=True)
        return folder
