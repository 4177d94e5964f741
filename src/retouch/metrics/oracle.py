"""World accuracy: does a picture world's oracle read back what the caption says, field by field?

The world is the installed one that reads the caption (``retouch.core.world.world_for``; shapes-64
reads its canonical captions of 64 x 64 pictures). Captions no world reads, and pictures its
oracle cannot read, are left out (``None``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retouch.core.world import world_for


def oracle_match(picture: np.ndarray, caption: str) -> dict[str, bool] | None:
    """Field -> does the oracle's reading agree with ``caption``, plus ``all``; ``None`` when no
    installed world reads the caption or its oracle cannot read the picture."""
    world = world_for([caption])
    if world is None:
        return None
    return world.match(np.asarray(picture), caption)


def oracle_accuracy(pictures: Sequence[np.ndarray], captions: Sequence[str]) -> dict[str, float | int] | None:
    """Mean of each field's hits over the scorable pairs (the fields of the first; ``all`` last),
    with their count ``n``; ``None`` if none."""
    matches = [m for m in map(oracle_match, pictures, captions) if m is not None]
    if not matches:
        return None
    fields = [k for k in matches[0] if k != "all"]
    accuracy: dict[str, float | int] = {k: float(np.mean([m[k] for m in matches])) for k in (*fields, "all")}
    accuracy["n"] = len(matches)
    return accuracy
