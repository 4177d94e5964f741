"""Loading input images with errors that say what is wrong with the file."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from retouch.errors import RetouchError


def load_image(path: str | os.PathLike[str], mode: str = "RGB") -> Image.Image:
    """Read an image file fully into memory and convert it to ``mode``.

    Raises:
        RetouchError: the file is missing, is a folder, is empty, or is not a readable image.
    """
    path = Path(path)
    if not path.exists():
        raise RetouchError(f"image not found: {path}")
    if path.is_dir():
        raise RetouchError(f"expected an image file but {path} is a folder")
    if path.stat().st_size == 0:
        raise RetouchError(f"image file is empty (0 bytes): {path}; re-export or re-download it")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here and not later
            return image.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise RetouchError(
            f"cannot read image {path}: the file is corrupt or not an image ({e}); "
            "use a PNG, JPEG or WebP file"
        ) from e
