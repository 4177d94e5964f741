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


def class_prompt(concept: ConceptImages, prompt: str | None) -> str:
    """The prompt of a concept's class images: ``prompt`` if given, else ``a {class word}``."""
    return prompt or f"a {concept.class_word}"


def class_images(
    model: LoadedModel, prompt: str, count: int, steps: int, root: Path | None = None, progress: bool = False
) -> np.ndarray:
    """``count`` pictures (count, h, w, 3) of ``prompt`` by ``model``, picture ``i`` seeded with
    ``i``; read from the cache when there, else drawn and stored."""
    from retouch.core.generate import generate
    key = json.dumps({"model": weights_sha256(model.pipe), "prompt": prompt, "steps": steps}, sort_keys=True)
    folder = (root or default_class_dir()) / hashlib.sha256(key.encode()).hexdigest()[:32]
    folder.mkdir(parents=True, exist_ok=True)
    pictures = []
    for i in tqdm(range(count), desc="class images", disable=not progress, leave=False):
        path = folder / f"{i:04d}.png"
        if not path.is_file():
            image = generate(model, prompt, seed=i, steps=steps).images[0]
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            atomic_write_bytes(path, buffer.getvalue())
        with Image.open(path) as image:
            pictures.append(np.asarray(image.convert("RGB")))
    return np.stack(pictures)


def class_batches(
    model: LoadedModel,
    concepts: Sequence[ConceptImages],
    prompt: str | None,
    count: int,
    steps: int,
    root: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor | None, list[str]]:
    """The latents (n, 4, h, w) and captions of ``count`` class images for every concept with a
    class word (or every concept, given ``prompt``); (None, []) when none has one."""
    latents, captions = [], []
    for concept in concepts:
        if concept.class_word is None and prompt is None:
            continue
        text = class_prompt(concept, prompt)
        pictures = class_images(model, text, count, steps, Path(root) if root else None, progress)
        latents.append(encode_pictures(model.pipe, pictures))
        captions += [text] * len(pictures)
    return (torch.cat(latents) if latents else None), captions
