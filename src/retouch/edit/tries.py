"""Best of several seeds: an edit the judge rejects is drawn again from the next seed.

A diffusion model misses now and then (a faint object, a shape it does not draw) where another
seed of the same settings succeeds. With ``tries=N`` the edit runs from ``seed``, ``seed + 1``, ...
until the judge (``retouch.edit.judge``) accepts one, at most N times, and keeps the first
accepted picture; when none is, the one the judge scores highest. The chosen seed is recorded,
so the recipe replays that one edit bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np

from retouch.core.seeding import MAX_SEED
from retouch.core.world import world_for
from retouch.errors import RetouchError

MAX_TRIES = 16
# ``tries="auto"``: this many when a world's oracle judges the captions (it reads the picture back
# exactly, so a rejected draw is a real miss), else 1: a CLIP judge is too unsure to spend draws on.
AUTO_TRIES = 3
Result = TypeVar("Result")


@dataclass
class Try:
    seed: int
    score: float
    took: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_tries(tries: int | str) -> None:
    if tries == "auto":
        return
    if isinstance(tries, bool) or not isinstance(tries, int) or not 1 <= tries <= MAX_TRIES:
        raise RetouchError(f"tries must be a whole number from 1 to {MAX_TRIES} or 'auto', got {tries!r}")


def resolve_tries(tries: int | str, judge: Any, target_prompt: str, picture: np.ndarray) -> int:
    """``tries`` itself, or for ``"auto"``: ``AUTO_TRIES`` when the oracle judges (no judge named,
    or ``"oracle"``, and an installed world reads the target caption and pictures like ``picture``),
    else 1."""
    if tries != "auto":
        return int(tries)
    if not (judge is None or (isinstance(judge, str) and judge == "oracle")):
        return 1
    world = world_for([target_prompt])
    return AUTO_TRIES if world is not None and world.match(picture, target_prompt) is not None else 1


def best_of(
    run: Callable[[int], Result], judge: Callable[[Result], tuple[float, bool]], seed: int, tries: int
) -> tuple[int, Result, list[Try]]:
    """``run(seed)`` for ``seed``, ``seed + 1``, ... (wrapping past ``MAX_SEED``) until ``judge``
    accepts, at most ``tries`` times: (the chosen seed, its result, every try's verdict)."""
    trials: list[Try] = []
    best: tuple[float, int, Result] | None = None
    for k in range(tries):
        current = (seed + k) % (MAX_SEED + 1)
        result = run(current)
        score, took = judge(result)
        trials.append(Try(current, float(score), bool(took)))
        if took:
            return current, result, trials
        if best is None or score > best[0]:
            best = (float(score), current, result)
    assert best is not None  # tries >= 1
    return best[1], best[2], trials
