"""The pictures a concept is taught from: a folder of 3-20 images, captions optional.

The folder follows Hugging Face's imagefolder convention: pictures, and optionally ``metadata.jsonl``
rows ``{"file_name": ..., "text": ...}`` whose text names the concept's token (``a large red <star>
on a blue background``). Without it every picture is captioned ``a <token> <class word>``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from retouch.errors import RetouchError
from retouch.train.data import square_picture

MIN_PICTURES, MAX_PICTURES = 3, 20  # Textual Inversion and DreamBooth use 3-5; more only slows training
PICTURE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
TOKEN_RE = re.compile(r"^<[a-z0-9_-]+>$")  # lower case: CLIP tokenizers lower-case the prompt


@dataclass(frozen=True)
class ConceptImages:
    """One concept: its token, class word, pictures (n, side, side, 3) uint8 and their captions."""

    token: str
    class_word: str | None
    images: np.ndarray
    captions: tuple[str, ...]
    folder: str


def default_caption(token: str, class_word: str | None) -> str:
    """``a <token> <class word>`` (DreamBooth's ``a [identifier] [class noun]``), or ``a <token>``."""
    return f"a {token} {class_word}" if class_word else f"a {token}"


def check_token(token: str) -> str:
    """A concept token is one lower-case word in angle brackets, like ``<star>``."""
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        raise RetouchError(
            f"the token {token!r} must be a lower-case word in angle brackets, like '<star>' "
            "(letters, digits, '_' or '-')"
        )
    return token


def load_concept_images(
    folder: str | Path, token: str, class_word: str | None, resolution: int
) -> ConceptImages:
    """Read ``folder``'s pictures (centre square, ``resolution`` a side) and captions, checked:
    3-20 pictures, every caption names ``token``, every listed file exists and is a picture."""
    folder, token = Path(folder), check_token(token)
    if not folder.is_dir():
        raise RetouchError(f"--images {folder}: no such folder; pass a folder of 3-20 pictures of the concept")
    meta = folder / "metadata.jsonl"
    rows = _metadata_rows(meta, token) if meta.is_file() else [
        (p.name, default_caption(token, class_word))
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in PICTURE_SUFFIXES and p.is_file()
    ]
    if not MIN_PICTURES <= len(rows) <= MAX_PICTURES:
        raise RetouchError(
            f"{folder} holds {len(rows)} pictures; a concept is taught from {MIN_PICTURES} to {MAX_PICTURES}"
        )
    images = [_read_picture(folder / name, resolution) for name, _ in rows]
    return ConceptImages(token, class_word, np.stack(images), tuple(text for _, text in rows), str(folder))


def _metadata_rows(meta: Path, token: str) -> list[tuple[str, str]]:
    rows = []
    for number, line in enumerate(meta.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name, text = row["file_name"], row["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise RetouchError(f"{meta}:{number}: expected {{\"file_name\": ..., \"text\": ...}} ({err})") from err
        if not isinstance(name, str) or not isinstance(text, str):
            raise RetouchError(f"{meta}:{number}: file_name and text must be strings")
        if token not in text.lower():
            raise RetouchError(f"{meta}:{number}: the caption {text!r} does not contain the token {token}")
        rows.append((name, text))
    return rows


def _read_picture(path: Path, resolution: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return square_picture(image, resolution)
    except FileNotFoundError as err:
        raise RetouchError(f"{path} is listed in metadata.jsonl but does not exist") from err
    except (UnidentifiedImageError, OSError) as err:
        raise RetouchError(f"{path} is not a readable picture ({err})") from err
