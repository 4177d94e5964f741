"""``strength="auto"``: the smallest strength at which the edit takes (SDEdit's realism-faithfulness
trade-off, Meng et al. 2022, section 4), by bisection over the number of denoising steps run."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from PIL import Image

DEFAULT_LOW = 0.3  # the weakest strength tried

Judge = Callable[[Image.Image], tuple[float, bool]]  # picture -> (score, the edit took)
Result = TypeVar("Result")


@dataclass
class Trial:
    strength: float
    score: float
    took: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def strength_for(denoising_steps: int, steps: int) -> float:
    """The strength that runs exactly ``denoising_steps`` of ``steps`` (img2img runs
    ``int(steps * strength)``): the middle of its interval, so float rounding cannot drop a step."""
    return min(1.0, round((denoising_steps + 0.5) / steps, 4))


def search_strength(
    run: Callable[[float], Result],
    judge: Callable[[Result], tuple[float, bool]],
    steps: int,
    low: float = DEFAULT_LOW,
) -> tuple[float, Result, list[Trial]]:
    """Bisect the denoising steps in ``[ceil(low * steps), steps]`` for the fewest at which
    ``judge`` says the edit took; the full strength is tried first.

    Returns the chosen strength, its result and the trace of every trial. When even the full
    strength does not take, that result is returned (its trial says ``took: False``).
    """
    trace: list[Trial] = []
    results: dict[int, Result] = {}

    def took(k: int) -> bool:
        strength = strength_for(k, steps)
        results[k] = run(strength)
        score, ok = judge(results[k])
        trace.append(Trial(strength, float(score), bool(ok)))
        return ok

    lo, hi = max(1, math.ceil(low * steps)), steps
    if not took(hi):
        return strength_for(hi, steps), results[hi], trace
    while lo < hi:  # invariant: the edit takes at hi
        mid = (lo + hi) // 2
        if took(mid):
            hi = mid
        else:
            lo = mid + 1
    return strength_for(hi, steps), results[hi], trace
