"""CLIP score (Hessel et al. 2021): the cosine similarity of a picture's and a caption's CLIP
embeddings. Reported per pair as the raw cosine (about 0.2 to 0.35 for SD pictures under OpenAI's
CLIP). torchmetrics' ``clip_score`` gives 100 times the mean over a batch, clipped at 0:
``ClipScorer.torchmetrics_score`` computes it on the same local model (tests/test_metrics.py checks
the two agree); per-pair figures, negative ones included, and the judges' cosine differences stay
on ``score``/``similarity``, which torchmetrics does not give.

This module is the one CLIP loader: metrics, evaluation and the edit judges (``retouch.edit.judge``)
all load through ``ClipScorer.load``.

The model is a transformers ``CLIPModel`` with its ``CLIPProcessor``: a local folder, a hub id already
in the local cache, or the bundled shapes-64 CLIP (``retouch train clip``) when installed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from retouch.errors import RetouchError
from retouch.metrics.weights import MissingWeights
from retouch.models.loading import bundled_model_path, hub_is_reachable

BUNDLED_CLIP = "shapes-64-clip"
BATCH = 64


def bundled_clip_path() -> Path:
    return bundled_model_path(BUNDLED_CLIP)


def missing_message() -> str:
    return (
        "CLIP score needs a CLIP model: pass --clip FOLDER (written by CLIPModel.save_pretrained and "
        "CLIPProcessor.save_pretrained, e.g. openai/clip-vit-base-patch32 downloaded on another machine) "
        f"or install the shapes-64 CLIP at {bundled_clip_path()} "
        f"(`retouch train clip --output {bundled_clip_path()}`)"
    )


def _pooled(output: torch.Tensor | object) -> torch.Tensor:
    """``get_*_features`` return a tensor, or in transformers 5 an output whose ``pooler_output``
    holds the projected embedding."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipScorer:
    """Unit-norm CLIP embeddings of pictures and captions, and their cosine similarities."""

    def __init__(self, model: torch.nn.Module, processor: object, name: str = "clip") -> None:
        self.model = model.eval()
        self.processor = processor
        self.name = name  # what reports record: a folder or a hub id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def load(cls, source: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu") -> ClipScorer:
        """From a folder or cached hub id; ``None``: the bundled shapes-64 CLIP.

        Raises:
            MissingWeights: nothing to load; the message says what to pass or install.
        """
        from transformers import CLIPModel, CLIPProcessor

        if source is None:
            if not (bundled_clip_path() / "config.json").is_file():
                raise MissingWeights(missing_message())
            source = bundled_clip_path()
        path = Path(source).expanduser()
        local = path.exists() or not hub_is_reachable()
        if not path.exists() and "/" not in str(source):
            raise MissingWeights(f"CLIP model not found: {source}. " + missing_message())
        where = str(path) if path.exists() else str(source)
        try:
            model = CLIPModel.from_pretrained(where, local_files_only=local).to(device)
            processor = CLIPProcessor.from_pretrained(where, local_files_only=local)
        except (OSError, ValueError) as e:
            raise MissingWeights(f"cannot load a CLIP model from {source} ({e}). " + missing_message()) from e
        return cls(model, processor, where)

    @torch.no_grad()
    def image_features(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        """(n, dim) unit vectors."""
        chunks = []
        for start in range(0, len(images), BATCH):
            batch = [_pil(image) for image in images[start : start + BATCH]]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            chunks.append(_pooled(self.model.get_image_features(pixel_values=pixels)))
        return torch.nn.functional.normalize(torch.cat(chunks).float(), dim=-1)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, dim) unit vectors; captions past the tokenizer's length are cut."""
        chunks = []
        for start in range(0, len(texts), BATCH):
            tokens = self.processor(
                text=list(texts[start : start + BATCH]), return_tensors="pt", padding=True, truncation=True
            ).to(self.device)
            chunks.append(_pooled(self.model.get_text_features(**tokens)))
        return torch.nn.functional.normalize(torch.cat(chunks).float(), dim=-1)

    def similarity(self, images: Sequence[Image.Image | np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """(n_images, n_texts) cosine similarities."""
        return (self.image_features(images) @ self.text_features(texts).T).cpu().numpy()

    def torchmetrics_score(self, images: Sequence[Image.Image | np.ndarray], texts: Sequence[str]) -> float:
        """torchmetrics' CLIPScore of the pairs (``100 * mean cosine``, clipped at 0) on this model."""
        from torchmetrics.functional.multimodal import clip_score

        if len(images) != len(texts) or not images:
            raise RetouchError(f"{len(images)} pictures but {len(texts)} captions")
        pictures = [torch.from_numpy(np.array(_pil(image))).permute(2, 0, 1).to(self.device) for image in images]
        towers = ClipTowers(self.model)
        with torch.no_grad():  # the pictures' device is where torchmetrics runs the model: this one's
            return float(clip_score(pictures, list(texts), lambda: (towers, self.processor)))

    def score(self, images: Sequence[Image.Image | np.ndarray], texts: Sequence[str]) -> list[float]:
        """CLIP score of each picture with its own caption."""
        if len(images) != len(texts):
            raise RetouchError(f"{len(images)} pictures but {len(texts)} captions")
        if not images:
            return []
        pairs = (self.image_features(images) * self.text_features(texts)).sum(-1)
        return [float(v) for v in pairs.cpu()]


class ClipTowers(torch.nn.Module):
    """A ``CLIPModel`` whose ``get_image_features``/``get_text_features`` return the projected
    embeddings as tensors, the interface torchmetrics calls (transformers 5 wraps them in an output)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def _pil(image: Image.Image | np.ndarray) -> Image.Image:
    return image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
