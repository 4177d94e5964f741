"""The pixel-space composite and the RGBA edit layer (as Text2Live hands back its edit layer).

The feathered alpha is 1 on the mask and falls linearly to 0 over ``feather`` pixels outside it,
so every pixel farther than that keeps the input's value bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

DEFAULT_FEATHER_PX = 2


def feather_alpha(mask: np.ndarray, feather: int = DEFAULT_FEATHER_PX) -> np.ndarray:
    """(H, W) bool -> (H, W) float in [0, 1]: 1 on the mask, a linear ramp ``feather`` px wide outside."""
    if feather <= 0 or mask.all() or not mask.any():
        return mask.astype(np.float64)
    distance = ndimage.distance_transform_edt(~mask)  # 0 on the mask, px to the mask elsewhere
    return np.clip(1.0 - distance / (feather + 1), 0.0, 1.0)


def composite(source: np.ndarray, edited: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``alpha * edited + (1 - alpha) * source``, rounded; where alpha is 0 the input itself."""
    a = alpha[..., None]
    blended = np.round(a * edited.astype(np.float64) + (1 - a) * source.astype(np.float64)).astype(np.uint8)
    return np.where(a > 0, blended, source)


def edit_layer(edited: np.ndarray, alpha: np.ndarray) -> Image.Image:
    """RGBA: the edited pixels with the feathered mask as alpha, to lay over the original."""
    rgba = np.dstack([edited, np.round(alpha * 255).astype(np.uint8)])
    return Image.fromarray(rgba)  # (H, W, 4) uint8 -> RGBA


def mask_image(mask: np.ndarray) -> Image.Image:
    """8-bit L, 255 = edited."""
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))  # (H, W) uint8 -> L


@dataclass
class Composited:
    """An edit laid onto the picture it changes, at that picture's size."""

    output: np.ndarray  # (H, W, 3) uint8: the input outside the mask and its feather band, bit for bit
    edited: np.ndarray  # (H, W, 3) uint8: the method's own pixels
    mask: np.ndarray  # (H, W) bool, True = edited
    alpha: np.ndarray  # (H, W) float: the feathered mask the composite used


def composite_edit(
    source: np.ndarray, edited: np.ndarray, mask: np.ndarray, feather: int = DEFAULT_FEATHER_PX
) -> Composited:
    """Crop ``edited`` and ``mask`` (a padded size) to ``source``'s (H, W), feather the mask and
    composite: the input outside the mask and its feather band, bit for bit; the edit inside."""
    height, width = source.shape[:2]
    edited, mask = edited[:height, :width], mask[:height, :width]
    alpha = feather_alpha(mask, feather)
    return Composited(composite(source, edited, alpha), edited, mask, alpha)
