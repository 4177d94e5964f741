"""Prior preservation's class images (Ruiz et al. 2022, sec. 3.3): pictures of the class word that
the base model itself draws before it learns anything, generated once and cached.

The cache folder is keyed by the model's weights and everything that draws the pictures (prompt,
steps, size), so a second run, a resumed one included, reads them back instead of sampling again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from retouch.io.atomic import atomic_write_bytes
from retouch.models.loading import LoadedModel
from retouch.train.concept_data import ConceptImages
from retouch.train.finetune import encode_pictures, weights_sha256


def default_class_dir() -> Path:
    """``$XDG_CACHE_HOME/retouch/class-images``, by default ``~/.cache/retouch/class-images``."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "retouch" / "class-images"


def class_images(
    model: LoadedModel,
    prompts: Sequence[str],
    count: int,
    steps: int,
    root: Path | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """``count`` pictures (count, h, w, 3) by ``model`` and their prompts: picture ``i`` of
    ``prompts[i % len(prompts)]`` seeded with ``i``; read from the cache when there, else drawn
    and stored (one folder per model, prompt and step count)."""
    from retouch.core.generate import generate

    model_sha = weights_sha256(model.pipe)
    pictures, captions = [], []
    for i in tqdm(range(count), desc="class images", disable=not progress, leave=False):
        prompt = prompts[i % len(prompts)]
        key = json.dumps({"model": model_sha, "prompt": prompt, "steps": steps}, sort_keys=True)
        path = (root or default_class_dir()) / hashlib.sha256(key.encode()).hexdigest()[:32] / f"{i:04d}.png"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            image = generate(model, prompt, seed=i, steps=steps).images[0]
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            atomic_write_bytes(path, buffer.getvalue())
        with Image.open(path) as image:
            pictures.append(np.asarray(image.convert("RGB")))
        captions.append(prompt)
    return np.stack(pictures), captions


def class_batches(
    model: LoadedModel,
    concepts: Sequence[ConceptImages],
    prompts: Sequence[str],
    count: int,
    steps: int,
    root: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor | None, list[str]]:
    """The latents (n, 4, h, w) and captions of ``count`` class images of ``prompts`` (cycled),
    or without them of ``a {class word}`` for each concept that has one; (None, []) when none."""
    groups = [list(prompts)] if prompts else [[f"a {c.class_word}"] for c in concepts if c.class_word]
    latents, captions = [], []
    for group in groups:
        pictures, texts = class_images(model, group, count, steps, Path(root) if root else None, progress)
        latents.append(encode_pictures(model.pipe, pictures))
        captions += texts
    return (torch.cat(latents) if latents else None), captions
