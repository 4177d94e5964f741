"""Fingerprints of pictures and files that recipes record, so a replay can tell what changed."""

from __future__ import annotations

import hashlib

import numpy as np


def pixels_sha256(pixels: np.ndarray) -> str:
    """A fingerprint of the converted input, so a replay can tell that the file changed since."""
    digest = hashlib.sha256(str(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()
