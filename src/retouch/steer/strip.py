"""Sequences of frames as one picture: a contact strip (one row) and an animated GIF."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from retouch.io.atomic import atomic_write_bytes

STRIP_GAP = 2  # pixels of white between frames
GIF_FRAME_MS = 200


def contact_strip(images: Sequence[Image.Image], gap: int = STRIP_GAP) -> Image.Image:
    """``images`` side by side in one row, left to right, ``gap`` white pixels apart."""
    if not images:
        raise ValueError("a strip needs at least one image")
    width, height = images[0].size
    strip = Image.new("RGB", (len(images) * width + (len(images) - 1) * gap, height), "white")
    for i, image in enumerate(images):
        strip.paste(image.convert("RGB"), (i * (width + gap), 0))
    return strip


def save_gif(
    frames: Sequence[Image.Image], path: str | os.PathLike[str], frame_ms: int = GIF_FRAME_MS
) -> Path:
    """Write ``frames`` as a looping animated GIF, atomically."""
    buffer = io.BytesIO()
    first, *rest = [frame.convert("RGB") for frame in frames]
    first.save(buffer, format="GIF", save_all=True, append_images=rest, duration=frame_ms, loop=0)
    return atomic_write_bytes(path, buffer.getvalue())
