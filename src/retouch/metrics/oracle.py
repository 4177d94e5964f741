"""Shapes-64 accuracy: does the world's oracle read back what the caption says, field by field?

Only canonical shapes-64 captions of 64 x 64 pictures are scored; others are left out (``None``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retouch.worlds.shapes64 import CANVAS, parse_caption, read_scene

FIELDS: tuple[str, ...] = ("shape", "color", "background", "size", "style")


def oracle_match(picture: np.ndarray, caption: str) -> dict[str, bool] | None:
    """Field -> does the oracle's reading agree with ``caption``, plus ``all``; ``None`` when the
    caption is not canonical or the picture is not 64 x 64 RGB."""
    fields = parse_caption(caption)
    picture = np.asarray(picture)
    if fields is None or picture.shape != (CANVAS, CANVAS, 3):
        return None
    reading = read_scene(picture).fields()
    hits = {name: reading[name] == fields[name] for name in FIELDS}
    return {**hits, "all": all(hits.values())}


def oracle_accuracy(pictures: Sequence[np.ndarray], captions: Sequence[str]) -> dict[str, float | int] | None:
    """Mean of each field's hits over the scorable pairs, with their count ``n``; ``None`` if none."""
    matches = [m for m in map(oracle_match, pictures, captions) if m is not None]
    if not matches:
        return None
    accuracy: dict[str, float | int] = {k: float(np.mean([m[k] for m in matches])) for k in (*FIELDS, "all")}
    accuracy["n"] = len(matches)
    return accuracy
