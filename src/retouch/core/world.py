"""The plug-in point for picture worlds whose captions and pictures can be read exactly.

The editor works on any captions. A world (such as ``retouch.worlds.shapes64``) adds what only it
knows: which caption field names which region, and an oracle that reads a picture back into
fields. Worlds are found through the ``retouch.worlds`` entry-point group, so the library never
imports one; with no world installed, every method still runs on free captions.

    [project.entry-points."retouch.worlds"]
    shapes-64 = "retouch.worlds.shapes64:WORLD"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Literal, Protocol, runtime_checkable

import numpy as np

Region = Literal["foreground", "background", "global"]
ENTRY_POINT_GROUP = "retouch.worlds"


@runtime_checkable
class World(Protocol):
    """What a picture world tells the editor. Fields are plain strings (``"color": "red"``)."""

    name: str

    def parse_caption(self, caption: str) -> dict[str, str] | None:
        """The caption's fields, or None when the caption is not one of this world's."""
        ...

    def field_region(self, field: str) -> Region:
        """The region a change of ``field`` touches."""
        ...

    def match(self, picture: np.ndarray, caption: str) -> dict[str, bool] | None:
        """For each field of ``caption``: does the (H, W, 3) uint8 ``picture`` show it? None when
        the caption is not this world's."""
        ...


Closeness = Callable[[np.ndarray, str, "np.ndarray | None"], "dict[str, float] | None"]


def closeness_of(world: World) -> Closeness | None:
    """The world's optional continuous reading, ``closeness(picture, caption, reference)``: for
    each field of ``caption`` how close the picture is to it, in [0, 1] (1: exactly), plus
    ``position`` (how little the object moved from the ``reference`` picture's) when a reference
    is given. Judges rank edits by it; a world without it is judged by ``match`` alone."""
    return getattr(world, "closeness", None)


def installed_worlds() -> list[World]:
    """Every world registered under the ``retouch.worlds`` entry-point group, in name order."""
    found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda point: point.name)
    return [point.load() for point in found]


def world_for(captions: Sequence[str], worlds: Sequence[World] | None = None) -> World | None:
    """The first world that parses every caption, or None (free captions)."""
    for world in installed_worlds() if worlds is None else worlds:
        if all(world.parse_caption(caption) for caption in captions):
            return world
    return None
