"""Any image a user may have -> the RGB picture an edit works on, with notes on what was done.

Transparency is composited on white, palettes / CMYK / 16-bit / grey are converted, and the EXIF
orientation is applied. Sizes the model cannot take are padded (and cropped back after the edit),
never resized; pictures past the size limit are refused with an error that says what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from retouch.errors import RetouchError
from retouch.io.images import load_image

MAX_SIDE = 2048  # pixels on the longer side
MAX_PIXELS = 4_000_000  # 4 MP
WHITE = (255, 255, 255)


@dataclass
class InputImage:
    image: Image.Image  # RGB, 8 bits per channel, upright
    mode: str  # the mode the file (or the caller's image) had
    notes: list[str] = field(default_factory=list)  # every conversion applied, for the report


def check_size(width: int, height: int) -> None:
    """Refuse pictures past ``MAX_SIDE`` or ``MAX_PIXELS``: they would exhaust memory, and a silent
    downscale would hand back a picture of another size."""
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise RetouchError(
            f"the image is {width}x{height} pixels; the limit is {MAX_SIDE} pixels on a side and "
            f"{MAX_PIXELS / 1e6:.1f} megapixels. Scale it down or crop it first (e.g. "
            f"`convert in.png -resize {MAX_SIDE}x{MAX_SIDE} out.png`), then edit and scale back"
        )


def read_input_image(path: str | os.PathLike[str]) -> InputImage:
    """Open ``path``, check its size from the header before decoding, and convert it to RGB."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            check_size(*image.size)
            image.load()
            return to_rgb(image)
    except Image.DecompressionBombError as e:
        raise RetouchError(f"{path}: {e}; the limit is {MAX_SIDE} pixels on a side") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        load_image(path)  # raises the clear error for missing, empty or corrupt files
        raise


def to_rgb(image: Image.Image) -> InputImage:
    """Upright 8-bit RGB, with a note for every change made on the way."""
    check_size(*image.size)
    notes: list[str] = []
    mode = image.mode
    orientation = _orientation(image)
    if orientation not in (None, 1):
        notes.append(f"applied the EXIF orientation ({orientation}): the picture was turned upright")
        image = ImageOps.exif_transpose(image)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        if np.asarray(rgba)[..., 3].min() < 255:
            notes.append(f"{mode} image has transparency: composited on white")
        else:
            notes.append(f"{mode} image is opaque: its alpha channel was dropped")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        image = Image.alpha_composite(background, rgba)
    elif image.mode.startswith("I") or image.mode == "F":
        image = Image.fromarray(_to_uint8(np.asarray(image), image.mode))  # (H, W) uint8 -> L
        notes.append(f"{mode} image: scaled to 8 bits and converted to RGB")
    elif image.mode == "CMYK":
        notes.append("CMYK image converted to RGB without a color profile; colors may shift slightly")
    elif image.mode not in ("RGB", "RGBA"):
        notes.append(f"{mode} image converted to RGB")
    return InputImage(image.convert("RGB"), mode, notes)


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(0x0112)  # the EXIF Orientation tag
    except Exception:  # a broken EXIF block: treat as no orientation
        return None


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    if mode == "F":
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        return np.clip(np.round(values * scale), 0, 255).astype(np.uint8)
    # 16-bit greys (I;16, I;16B, and I as PNG loads them): 65535 -> 255
    return np.clip(np.round(values.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def pad_to_multiple(pixels: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad (H, W, C) on the bottom and right to the next multiple of ``multiple``.

    Reflection keeps the picture's statistics at the seam; a side shorter than the pad falls back
    to repeating the edge. Returns the padded array and the original (height, width).
    """
    height, width = pixels.shape[:2]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not pad_h and not pad_w:
        return pixels, (height, width)
    mode = "reflect" if pad_h < height and pad_w < width else "edge"
    padded = np.pad(pixels, ((0, pad_h), (0, pad_w), *[(0, 0)] * (pixels.ndim - 2)), mode=mode)
    return padded, (height, width)
