"""Fingerprints of pictures and files that recipes record, so a replay can tell what changed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

HASH_CHUNK = 1 << 20  # bytes read at a time


def pixels_sha256(pixels: np.ndarray) -> str:
    """A fingerprint of the converted input, so a replay can tell that the file changed since."""
    digest = hashlib.sha256(str(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, as ``sha256sum`` prints it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_sha256(path: str | os.PathLike[str]) -> str:
    """A fingerprint of every file under a folder (relative names and contents), e.g. a whole
    diffusers model: any file added, removed, renamed or changed gives another value."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(root).as_posix()}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def safetensors_data_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a .safetensors file's tensor data, its header left out: the "addnet" hash that
    kohya's scripts and AUTOMATIC1111 show for LoRA files (metadata edits leave it unchanged)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        f.seek(8 + header_size)
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
