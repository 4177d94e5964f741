"""The shapes-64 world: scenes, renderer, captions, edit pairs and the oracle.

Follows ``shared/domain/shapes-64.md`` to the letter: a 64 x 64 RGB canvas with one
background colour and one object, rendered at 4x and box-filtered down.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
from scipy import ndimage

from retouch.core.world import Region

CANVAS = 64
SUPERSAMPLE = 4
MARGIN = 2
BORDER_PX = 2
PASTEL_BLEND = 0.5

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 40),
    "green": (50, 170, 70),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
    "pink": (245, 130, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
SIZES: dict[str, int] = {"small": 20, "large": 36}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
RESERVED_SHAPES: tuple[str, ...] = ("star", "diamond")  # held-out concepts for personalization
STYLES: tuple[str, ...] = ("plain", "pastel")
VOCABULARY: tuple[str, ...] = (
    ("a", "an", "on", "background", "pastel", ",", "small", "large")
    + COLORS
    + SHAPES
    + RESERVED_SHAPES  # star and diamond: no training caption uses them; learned concepts take their place
)

EditKind = Literal["background", "color", "shape", "size", "style"]
EDIT_REGION: dict[str, Region] = {
    "background": "background",
    "color": "foreground",
    "shape": "foreground",
    "size": "foreground",
    "style": "global",
}


@dataclass(frozen=True)
class Scene:
    """One shapes-64 scene. (x0, y0) is the object's bounding-box top-left at 64 px scale."""

    background: str
    color: str
    shape: str
    size: str
    x0: int
    y0: int
    style: str = "plain"

    def __post_init__(self) -> None:
        if self.background not in PALETTE or self.color not in PALETTE:
            raise ValueError(f"colors must be palette names {COLORS}, got {self.color!r} on {self.background!r}")
        if self.color == self.background:
            raise ValueError(f"the object color must differ from the background ({self.color!r})")
        if self.shape not in SHAPES + RESERVED_SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES + RESERVED_SHAPES}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; expected one of {tuple(SIZES)}")
        if self.style not in STYLES:
            raise ValueError(f"unknown style {self.style!r}; expected one of {STYLES}")
        hi = CANVAS - MARGIN - SIZES[self.size]
        if not (MARGIN <= self.x0 <= hi and MARGIN <= self.y0 <= hi):
            raise ValueError(f"box ({self.x0}, {self.y0}) of a {self.size} object must lie in [{MARGIN}, {hi}]")

    @property
    def side(self) -> int:
        return SIZES[self.size]

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.side / 2, self.y0 + self.side / 2)

    def caption(self) -> str:
        return caption(self.size, self.color, self.shape, self.background, self.style)

    def to_dict(self) -> dict:
        return asdict(self)

    def render(self) -> np.ndarray:
        """(64, 64, 3) uint8 picture."""
        return render(self)

    def coverage(self) -> np.ndarray:
        """(64, 64) float fraction of each pixel covered by the object."""
        return shape_coverage(self.shape, self.x0, self.y0, self.side)


def caption(size: str, color: str, shape: str, background: str, style: str = "plain") -> str:
    article = "an" if background == "orange" else "a"
    text = f"a {size} {color} {shape} on {article} {background} background"
    return text + (", pastel" if style == "pastel" else "")


def parse_caption(text: str) -> dict[str, str] | None:
    """Inverse of :func:`caption`; ``None`` when ``text`` is not a canonical caption."""
    words = text.strip().replace(",", " ,").split()
    style = "plain"
    if words[-2:] == [",", "pastel"]:
        style, words = "pastel", words[:-2]
    if len(words) != 8 or words[0] != "a" or words[4] != "on" or words[7] != "background":
        return None
    _, size, color, shape, _, article, background, _ = words
    fields = {"size": size, "color": color, "shape": shape, "background": background, "style": style}
    if size not in SIZES or color not in PALETTE or background not in PALETTE:
        return None
    if shape not in SHAPES + RESERVED_SHAPES or article != ("an" if background == "orange" else "a"):
        return None
    return fields


def _inside(shape: str, px: np.ndarray, py: np.ndarray, x0: float, y0: float, s: float) -> np.ndarray:
    """Boolean mask of the points (px, py) inside ``shape`` drawn in the box (x0, y0, side s)."""
    cx, cy = x0 + s / 2, y0 + s / 2
    in_box = (px >= x0) & (px <= x0 + s) & (py >= y0) & (py <= y0 + s)
    if shape == "square":
        return in_box
    if shape == "circle":
        return (px - cx) ** 2 + (py - cy) ** 2 <= (s / 2) ** 2
    if shape == "triangle":
        # apex (cx, y0), base from (x0, y0 + s) to (x0 + s, y0 + s): half-width grows by 1/2 per unit of depth
        return (py >= y0) & (py <= y0 + s) & (np.abs(px - cx) <= (py - y0) / 2)
    if shape == "cross":
        half = s / 6
        return in_box & ((np.abs(px - cx) <= half) | (np.abs(py - cy) <= half))
    if shape == "star":
        return _inside_star(px - cx, py - cy, s / 2, 0.4 * s / 2)
    if shape == "diamond":
        # the square turned 45 degrees, its vertices at the midpoints of the box's sides
        return np.abs(px - cx) + np.abs(py - cy) <= s / 2
    raise ValueError(f"unknown shape {shape!r}")


def _inside_star(dx: np.ndarray, dy: np.ndarray, outer: float, inner: float) -> np.ndarray:
    """Five-pointed star, one point straight up (y grows downwards), ten vertices 36 degrees apart."""
    angles = np.deg2rad(-90.0 + 36.0 * np.arange(11))
    radii = np.where(np.arange(11) % 2 == 0, outer, inner)
    vx, vy = radii * np.cos(angles), radii * np.sin(angles)
    theta = np.mod(np.arctan2(dy, dx) + np.pi / 2, 2 * np.pi)  # 0 at the top point, clockwise on screen
    k = np.minimum((theta // np.deg2rad(36.0)).astype(int), 9)
    ax, ay, bx, by = vx[k], vy[k], vx[k + 1], vy[k + 1]
    # the centre and the point lie on the same side of edge a->b (or the point is on it)
    cross_p = (bx - ax) * (dy - ay) - (by - ay) * (dx - ax)
    cross_c = (bx - ax) * (0 - ay) - (by - ay) * (0 - ax)
    return cross_p * cross_c >= -1e-9


def shape_coverage(shape: str, x0: float, y0: float, side: float) -> np.ndarray:
    """(64, 64) fraction of each pixel's 4x4 sub-pixels whose centres lie inside the shape."""
    n = CANVAS * SUPERSAMPLE
    centres = np.arange(n) + 0.5
    px, py = np.meshgrid(centres, centres)
    big = _inside(shape, px, py, x0 * SUPERSAMPLE, y0 * SUPERSAMPLE, side * SUPERSAMPLE)
    return big.reshape(CANVAS, SUPERSAMPLE, CANVAS, SUPERSAMPLE).mean(axis=(1, 3))


def _round(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5).astype(np.uint8)


def pastel(color: tuple[int, int, int] | np.ndarray) -> np.ndarray:
    """Blend halfway to white: round(0.5 * c + 0.5 * 255) per channel."""
    return _round(PASTEL_BLEND * np.asarray(color, dtype=np.float64) + (1 - PASTEL_BLEND) * 255)


def render(scene: Scene) -> np.ndarray:
    """(64, 64, 3) uint8: 4x render, box filter (mean of each 4x4 block, rounded), then the style."""
    cov = scene.coverage()[..., None]  # (64, 64, 1), exactly the 4x4 block mean of a binary render
    bg = np.asarray(PALETTE[scene.background], dtype=np.float64)
    fg = np.asarray(PALETTE[scene.color], dtype=np.float64)
    image = _round(cov * fg + (1 - cov) * bg)
    return pastel(image) if scene.style == "pastel" else image


def sample_scene(rng: np.random.Generator, shapes: tuple[str, ...] = SHAPES, **fixed: str | int) -> Scene:
    """A uniformly random scene; keyword arguments fix fields (e.g. ``size="large"``)."""
    background = str(fixed.get("background", rng.choice(COLORS)))
    color = fixed.get("color")
    if color is None:
        color = str(rng.choice([c for c in COLORS if c != background]))
    size = str(fixed.get("size", rng.choice(tuple(SIZES))))
    hi = CANVAS - MARGIN - SIZES[size]
    return Scene(
        background=background,
        color=str(color),
        shape=str(fixed.get("shape", rng.choice(shapes))),
        size=size,
        x0=int(fixed.get("x0", rng.integers(MARGIN, hi + 1))),
        y0=int(fixed.get("y0", rng.integers(MARGIN, hi + 1))),
        style=str(fixed.get("style", rng.choice(STYLES))),
    )


@dataclass(frozen=True)
class EditPair:
    """A ground-truth edit: two scenes that differ in one field, and the pixels that change."""

    source: Scene
    target: Scene
    kind: EditKind
    region: Region
    mask: np.ndarray  # (64, 64) bool, True where the edit may change pixels

    @property
    def source_caption(self) -> str:
        return self.source.caption()

    @property
    def target_caption(self) -> str:
        return self.target.caption()


def edit_mask(source: Scene, target: Scene, region: Region) -> np.ndarray:
    """Background edit: the background pixels; foreground: union of old and new object pixels."""
    if region == "global":
        return np.ones((CANVAS, CANVAS), dtype=bool)
    if region == "background":
        return source.coverage() < 1.0
    return (source.coverage() > 0) | (target.coverage() > 0)


def make_edit(source: Scene, kind: EditKind, value: str) -> EditPair:
    """Change one field of ``source``; a size change keeps the box centre."""
    if kind == "size":
        shift = (source.side - SIZES[value]) // 2
        target = replace(source, size=value, x0=source.x0 + shift, y0=source.y0 + shift)
    else:
        target = replace(source, **{kind: value})
    if target == source:
        raise ValueError(f"the edit {kind}={value!r} changes nothing")
    region = EDIT_REGION[kind]
    return EditPair(source, target, kind, region, edit_mask(source, target, region))


def sample_edit(rng: np.random.Generator, kind: EditKind) -> EditPair:
    """A random edit pair of the given kind."""
    while True:
        # large boxes always fit where the small one sits centred, so size edits stay in the canvas
        source = sample_scene(rng, size="large") if kind == "size" else sample_scene(rng)
        if kind == "size":
            source = replace(source, size="small", x0=source.x0 + 8, y0=source.y0 + 8)
            if rng.random() < 0.5:
                return make_edit(source, "size", "large")
            source = replace(source, size="large", x0=source.x0 - 8, y0=source.y0 - 8)
            return make_edit(source, "size", "small")
        if kind == "background":
            options = [c for c in COLORS if c not in (source.background, source.color)]
        elif kind == "color":
            options = [c for c in COLORS if c not in (source.background, source.color)]
        elif kind == "shape":
            options = [s for s in SHAPES if s != source.shape]
        else:
            options = [s for s in STYLES if s != source.style]
        return make_edit(source, kind, str(rng.choice(options)))


# ---------------------------------------------------------------------------------------------
# The oracle: read a scene back from pixels.


@dataclass(frozen=True)
class Reading:
    """What the oracle reads from a picture; ``None`` fields could not be read."""

    background: str
    style: str
    color: str | None
    shape: str | None
    size: str | None
    bbox: tuple[int, int, int, int] | None  # x_min, y_min, x_max, y_max (inclusive)
    object_mask: np.ndarray | None

    def fields(self) -> dict[str, str | None]:
        return {
            "shape": self.shape,
            "color": self.color,
            "background": self.background,
            "size": self.size,
            "style": self.style,
        }

    def matches(self, scene: Scene) -> dict[str, bool]:
        """Field by field: does this reading agree with ``scene``?"""
        return {k: v == getattr(scene, k) for k, v in self.fields().items()}


def _nearest(colors: np.ndarray, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.linalg.norm(colors[..., None, :].astype(np.float64) - palette, axis=-1)
    return d.argmin(-1), d.min(-1)


def _read_with(image: np.ndarray, palette: np.ndarray) -> tuple[float, int, int | None, np.ndarray | None]:
    b = BORDER_PX
    border = np.concatenate([image[:b].reshape(-1, 3), image[-b:].reshape(-1, 3),
                             image[b:-b, :b].reshape(-1, 3), image[b:-b, -b:].reshape(-1, 3)])
    bg_idx, bg_dist = _nearest(np.median(border, axis=0), palette)
    labels_idx, _ = _nearest(image, palette)
    components, count = ndimage.label(labels_idx != bg_idx)  # 4-connected by default
    if count == 0:
        return float(bg_dist), int(bg_idx), None, None
    sizes = ndimage.sum_labels(np.ones_like(components), components, index=np.arange(1, count + 1))
    obj = components == (int(np.argmax(sizes)) + 1)
    color_idx, color_dist = _nearest(np.median(image[obj], axis=0), palette)
    return float(bg_dist + color_dist), int(bg_idx), int(color_idx), obj


def read_scene(image: np.ndarray, reserved: bool = False) -> Reading:
    """Read a (64, 64, 3) uint8 picture back into its scene fields (the shapes-64 oracle). With
    ``reserved`` (a picture of a learned concept) the reserved shapes are shape candidates too."""
    image = np.asarray(image)
    if image.shape != (CANVAS, CANVAS, 3):
        raise ValueError(f"the oracle reads (64, 64, 3) pictures, got {image.shape}")
    plain = np.array([PALETTE[c] for c in COLORS], dtype=np.float64)
    readings = {"plain": _read_with(image, plain), "pastel": _read_with(image, pastel(plain).astype(np.float64))}
    style = min(readings, key=lambda k: readings[k][0])
    _, bg_idx, color_idx, obj = readings[style]
    if obj is None or color_idx is None:
        return Reading(COLORS[bg_idx], style, None, None, None, None, None)
    ys, xs = np.nonzero(obj)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    longer = max(bbox[2] - bbox[0] + 1, bbox[3] - bbox[1] + 1)
    size = min(SIZES, key=lambda k: abs(SIZES[k] - longer))
    side = SIZES[size]
    cx, cy = (bbox[0] + bbox[2] + 1) / 2, (bbox[1] + bbox[3] + 1) / 2

    def iou(shape: str) -> float:
        mask = shape_coverage(shape, cx - side / 2, cy - side / 2, side) >= 0.5
        return float((mask & obj).sum() / max((mask | obj).sum(), 1))

    shape = max(SHAPES + (RESERVED_SHAPES if reserved else ()), key=iou)
    return Reading(COLORS[bg_idx], style, COLORS[color_idx], shape, size, bbox, obj)


def oracle_accuracy(images: list[np.ndarray], scenes: list[Scene], reserved: bool = False) -> dict[str, float]:
    """Per-field and all-fields accuracy of the oracle's readings against ground-truth scenes
    (``reserved``: the reserved shapes among the candidates, for pictures of learned concepts)."""
    hits = [read_scene(img, reserved).matches(sc) for img, sc in zip(images, scenes, strict=True)]
    out = {k: float(np.mean([h[k] for h in hits])) for k in hits[0]}
    out["all"] = float(np.mean([all(h.values()) for h in hits]))
    return out



FIELDS: tuple[str, ...] = ("shape", "color", "background", "size", "style")
COLOUR_SCALE = 100.0  # RGB distance at which a colour's closeness reaches 0 (20 units: 0.8)
PLACE_SCALE = 8.0  # centre shift in px at which the position's closeness reaches 0 (4 px: 0.5)


def _centre(bbox: tuple[int, int, int, int]) -> tuple[float, float]:
    return (bbox[0] + bbox[2] + 1) / 2, (bbox[1] + bbox[3] + 1) / 2


def closeness(picture: np.ndarray, caption: str, reference: np.ndarray | None = None) -> dict[str, float] | None:
    """How close the picture's fields are to ``caption``'s, each in [0, 1] (1: exactly the target):
    colours by RGB distance of the median object / border colour to the caption's palette colour
    (pastel when the caption says so), shape by IoU with the caption's shape drawn where the object
    is, size by the bounding box's longer side, style by the reading. With ``reference`` (the input
    picture, the same size), ``position``: how little the object's centre moved from the reference's. None when
    the caption is not canonical or the picture not 64 x 64 RGB."""
    fields, picture = parse_caption(caption), np.asarray(picture)
    if fields is None or picture.shape != (CANVAS, CANVAS, 3):
        return None
    reading = read_scene(picture)
    want = {name: np.asarray(PALETTE[fields[name]], dtype=np.float64) for name in ("color", "background")}
    if fields["style"] == "pastel":
        want = {name: pastel(colour).astype(np.float64) for name, colour in want.items()}
    border = np.concatenate([picture[:BORDER_PX].reshape(-1, 3), picture[-BORDER_PX:].reshape(-1, 3)])
    out = {
        "background": _colour_closeness(np.median(border, axis=0), want["background"]),
        "style": float(reading.style == fields["style"]),
    }
    if reading.object_mask is None or reading.bbox is None:
        lost = ("color", "shape", "size") + (("position",) if np.shape(reference) == picture.shape else ())
        return {**out, **dict.fromkeys(lost, 0.0)}
    obj = reading.object_mask
    out["color"] = _colour_closeness(np.median(picture[obj], axis=0), want["color"])
    side, (cx, cy) = SIZES[fields["size"]], _centre(reading.bbox)
    longer = max(reading.bbox[2] - reading.bbox[0] + 1, reading.bbox[3] - reading.bbox[1] + 1)
    out["size"] = max(0.0, 1.0 - abs(longer - side) / side)
    drawn = shape_coverage(fields["shape"], cx - longer / 2, cy - longer / 2, longer) >= 0.5
    out["shape"] = float((drawn & obj).sum() / max((drawn | obj).sum(), 1))
    if reference is not None and np.shape(reference) == picture.shape:
        before = read_scene(np.asarray(reference)).bbox
        shift = np.inf if before is None else float(np.hypot(*np.subtract(_centre(before), (cx, cy))))
        out["position"] = max(0.0, 1.0 - shift / PLACE_SCALE)
    return out


def _colour_closeness(colour: np.ndarray, want: np.ndarray) -> float:
    return max(0.0, 1.0 - float(np.linalg.norm(colour - want)) / COLOUR_SCALE)


@dataclass(frozen=True)
class Shapes64World:
    """The shapes-64 world as the editor's plug-in (``retouch.core.world.World``)."""

    name: str = "shapes-64"

    def parse_caption(self, caption: str) -> dict[str, str] | None:
        return parse_caption(caption)

    def field_region(self, field: str) -> Region:
        return EDIT_REGION[field]

    def match(self, picture: np.ndarray, caption: str) -> dict[str, bool] | None:
        """Field -> does the oracle's reading agree with ``caption``, plus ``all``; ``None`` when the
        caption is not canonical or the picture is not 64 x 64 RGB."""
        fields = parse_caption(caption)
        picture = np.asarray(picture)
        if fields is None or picture.shape != (CANVAS, CANVAS, 3):
            return None
        reading = read_scene(picture, reserved=fields["shape"] in RESERVED_SHAPES).fields()
        hits = {name: reading[name] == fields[name] for name in FIELDS}
        return {**hits, "all": all(hits.values())}

    def closeness(
        self, picture: np.ndarray, caption: str, reference: np.ndarray | None = None
    ) -> dict[str, float] | None:
        return closeness(picture, caption, reference)


WORLD = Shapes64World()  # the entry point ``retouch.worlds: shapes-64``

__all__ = [
    "COLORS", "FIELDS", "PALETTE", "RESERVED_SHAPES", "WORLD", "SHAPES",
    "SIZES", "STYLES", "VOCABULARY", "EditPair", "Reading", "Scene",
    "caption", "closeness", "edit_mask", "make_edit", "oracle_accuracy", "parse_caption", "read_scene", "render",
    "sample_edit", "sample_scene", "shape_coverage",
]
