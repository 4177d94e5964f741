"""Training data sources: an image folder, Fashion-MNIST, and those that worlds register.

Each source hands out batches of uint8 pictures (batch, height, width, 3) with their captions, drawn
with a numpy Generator so that a run can be resumed at any step with the same data.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image


class Source(Protocol):
    resolution: int

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]: ...

    def vocabulary(self) -> list[str]: ...


@dataclass
class FixedSource:
    """A finite set of pictures with captions, sampled with replacement."""

    images: np.ndarray  # (n, resolution, resolution, 3) uint8
    captions: list[str]

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]:
        idx = rng.integers(0, len(self.captions), n)
        return self.images[idx], [self.captions[i] for i in idx]

    def vocabulary(self) -> list[str]:
        from retouch.train.tokenizer import corpus_words

        return corpus_words(self.captions)


def square_picture(image: Image.Image, resolution: int) -> np.ndarray:
    """The centred square crop of ``image`` resized to ``resolution`` (uint8 RGB)."""
    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return np.asarray(image.resize((resolution, resolution), Image.Resampling.BICUBIC))


def imagefolder_source(folder: str | Path, resolution: int = 64) -> FixedSource:
    """Hugging Face imagefolder convention: images plus ``metadata.jsonl`` rows {"file_name", "text"}."""
    folder = Path(folder)
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found: an image folder needs metadata.jsonl with file_name and text")
    images, captions = [], []
    for number, line in enumerate(meta.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            path, text = folder / row["file_name"], str(row["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{meta}:{number}: expected {{\"file_name\": ..., \"text\": ...}} ({err})") from err
        with Image.open(path) as image:
            images.append(square_picture(image, resolution))
        captions.append(text)
    if not images:
        raise ValueError(f"{meta} lists no images")
    return FixedSource(np.stack(images), captions)


FASHION_MNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_source(folder: str | Path, resolution: int = 32, split: str = "train") -> FixedSource:
    """Fashion-MNIST from its IDX ``.gz`` files; captions ``a photo of a sneaker``, ``... an ankle boot``."""
    folder = Path(folder)
    prefix = "train" if split == "train" else "t10k"
    images_path = folder / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = folder / f"{prefix}-labels-idx1-ubyte.gz"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: put the Fashion-MNIST IDX .gz files in {folder}")
    digits, labels = _read_idx(images_path), _read_idx(labels_path)
    if len(digits) != len(labels):
        raise ValueError(f"{images_path} has {len(digits)} images but {labels_path} {len(labels)} labels")
    images = np.stack([
        np.asarray(Image.fromarray(d).resize((resolution, resolution), Image.Resampling.BICUBIC).convert("RGB"))
        for d in digits
    ])
    names = [FASHION_MNIST_CLASSES[int(k)] for k in labels]
    captions = [f"a photo of {'an' if n[0] in 'aeiou' else 'a'} {n}" for n in names]
    return FixedSource(images, captions)


DATA_SOURCE_GROUP = "retouch.data_sources"  # entry points: name -> a Source class built with no arguments


def registered_sources() -> dict[str, type]:
    """The data sources that installed worlds register (``shapes64`` from retouch.worlds)."""
    return {point.name: point.load() for point in entry_points(group=DATA_SOURCE_GROUP)}


def make_source(kind: str, path: str | None = None, resolution: int | None = None) -> Source:
    registered = registered_sources()
    if kind in registered:
        return registered[kind]()
    if path is None:
        raise ValueError(f"--data {kind} needs --data-dir")
    if kind == "imagefolder":
        return imagefolder_source(path, resolution or 64)
    if kind == "fashion-mnist":
        return fashion_mnist_source(path, resolution or 32)
    known = ", ".join(sorted({*registered, "imagefolder", "fashion-mnist"}))
    raise ValueError(f"unknown data source {kind!r}; expected one of: {known}")
