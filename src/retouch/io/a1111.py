"""AUTOMATIC1111's sampler names, as its PNG ``parameters`` text writes them ("Sampler: Euler a")."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from retouch.errors import RetouchError

# retouch's scheduler name -> the "Sampler:" name AUTOMATIC1111 writes
A1111_SAMPLERS: Mapping[str, str] = MappingProxyType(
    {"lms": "LMS", "ddim": "DDIM", "euler": "Euler", "euler-a": "Euler a", "dpm++": "DPM++ 2M"}
)


def a1111_sampler(scheduler: str) -> str:
    """``"euler-a"`` -> ``"Euler a"``."""
    try:
        return A1111_SAMPLERS[scheduler]
    except KeyError:
        raise RetouchError(
            f"unknown scheduler {scheduler!r}; choose one of: {', '.join(A1111_SAMPLERS)}"
        ) from None


def scheduler_from_a1111_name(a1111_name: str) -> str:
    """``"Euler a"`` -> ``"euler-a"``; the inverse of ``a1111_sampler``."""
    for name, sampler in A1111_SAMPLERS.items():
        if sampler == a1111_name:
            return name
    raise RetouchError(f"unknown sampler {a1111_name!r} in PNG parameters")
