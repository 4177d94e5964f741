"""Seeds: every random path takes a generator seeded from one recorded integer."""

from __future__ import annotations

import secrets

MAX_SEED = 2**63 - 1


def random_seed() -> int:
    """A fresh seed for a run that was given none (it is recorded, so the run replays)."""
    return secrets.randbelow(2**32)
