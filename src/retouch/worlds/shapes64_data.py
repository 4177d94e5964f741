"""The shapes-64 world as a training data source (entry point ``retouch.data_sources: shapes64``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retouch.worlds import shapes64


@dataclass
class Shapes64Source:
    """Procedural shapes-64 scenes (every field uniform, the reserved star and diamond excluded)."""

    resolution: int = shapes64.CANVAS

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]:
        scenes = [shapes64.sample_scene(rng) for _ in range(n)]
        return np.stack([s.render() for s in scenes]), [s.caption() for s in scenes]

    def sample_with_foreground(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str], np.ndarray]:
        """The same draws as ``sample`` (the rng is used by the scenes alone), plus each object's
        (n, 64, 64) pixel coverage in [0, 1]."""
        scenes = [shapes64.sample_scene(rng) for _ in range(n)]
        coverage = np.stack([s.coverage() for s in scenes]).astype(np.float32)
        return np.stack([s.render() for s in scenes]), [s.caption() for s in scenes], coverage

    def vocabulary(self) -> list[str]:
        return list(shapes64.VOCABULARY)
