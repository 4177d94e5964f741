"""Instructions in the shapes-64 world: the grammar of ``shared/domain/shapes-64.md`` ("Instructions").

Both directions: ``phrase`` writes an edit pair as an instruction (a phrasing drawn at random), and
``parse_instruction`` reads an instruction against the scene it applies to back into the edited
scene, so an instruction can become the (source, target) caption pair ``edit`` takes. The data
source ``Shapes64Instructions`` draws (picture, instruction, edited picture) triplets from the
world for ``retouch train instruct``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from retouch.worlds import shapes64
from retouch.worlds.shapes64 import COLORS, SHAPES, SIZES, EditPair, Scene, make_edit

if TYPE_CHECKING:
    from retouch.models.loading import LoadedModel
    from retouch.steer.pairs import GeneratedTriplets

KINDS: tuple[str, ...] = ("background", "color", "shape", "size", "style")
# The words instructions add to the captions' vocabulary (the spec's list, in its order).
INSTRUCTION_WORDS: tuple[str, ...] = (
    "make", "the", "change", "to", "turn", "into", "replace", "with", "it", "color", "bigger", "smaller", "plain",
)
# Every phrasing of each kind; {shape} is the object's current shape, {shape2} the new one.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "background": (
        "make the background {color}", "change the background to {color}", "turn the background {color}",
    ),
    "color": ("make the {shape} {color}", "color the {shape} {color}", "turn the {shape} {color}"),
    "shape": ("turn the {shape} into a {shape2}", "replace the {shape} with a {shape2}", "make it a {shape2}"),
    "size": ("make the {shape} {size}", "make it {relative}"),
    "style": ("make it {style}",),
}
RELATIVE = {"large": "bigger", "small": "smaller"}  # ``make it bigger``: small -> large


def phrase(pair: EditPair, rng: np.random.Generator) -> str:
    """An instruction naming ``pair``'s edit, in one of its kind's phrasings drawn from ``rng``."""
    source, target = pair.source, pair.target
    template = str(rng.choice(TEMPLATES[pair.kind]))
    return template.format(
        color=target.background if pair.kind == "background" else target.color,
        shape=source.shape,
        shape2=target.shape,
        size=target.size,
        relative=RELATIVE[target.size],
        style=target.style,
    )


def parse_instruction(instruction: str, scene: Scene) -> EditPair | None:
    """The edit ``instruction`` names on ``scene``, or ``None`` when it names none: not in the
    grammar, a shape other than the object's own, a value the scene already has, or an edited
    scene the spec does not allow (an object the background's colour, a box off the canvas)."""
    words = re.sub(r"\s+", " ", instruction.strip().lower())
    for kind, templates in TEMPLATES.items():
        for template in templates:
            fields = _match(template, words)
            if fields is None or fields.get("shape", scene.shape) != scene.shape:
                continue
            value = _value(kind, fields)
            if value is None:
                continue
            try:
                return make_edit(scene, kind, value)  # type: ignore[arg-type]
            except ValueError:  # changes nothing, or an impossible scene
                return None
    return None


def instruction_captions(instruction: str, source_caption: str) -> tuple[str, str] | None:
    """(source, target) canonical captions for ``instruction`` applied to the scene
    ``source_caption`` describes (the object's position does not enter captions), or ``None``."""
    fields = shapes64.parse_caption(source_caption)
    if fields is None:
        return None
    side = SIZES[fields["size"]]
    centred = (shapes64.CANVAS - side) // 2  # any legal position: a size edit keeps the centre
    scene = Scene(x0=centred, y0=centred, **fields)
    pair = parse_instruction(instruction, scene)
    return None if pair is None else (pair.source_caption, pair.target_caption)


def _match(template: str, words: str) -> dict[str, str] | None:
    """The slot values when ``words`` fits ``template`` exactly, else None."""
    pattern = re.escape(template)
    for slot in ("color", "shape2", "shape", "size", "relative", "style"):
        pattern = pattern.replace(re.escape("{" + slot + "}"), f"(?P<{slot}>[a-z]+)")
    found = re.fullmatch(pattern, words)
    return None if found is None else found.groupdict()


def _value(kind: str, fields: dict[str, str]) -> str | None:
    """The new value of ``kind``'s field the slots name, or None when a slot holds a wrong word."""
    if kind in ("background", "color"):
        return fields["color"] if fields["color"] in COLORS else None
    if kind == "shape":
        return fields["shape2"] if fields["shape2"] in SHAPES else None
    if kind == "size":
        if "relative" in fields:
            return {v: k for k, v in RELATIVE.items()}.get(fields["relative"])
        return fields["size"] if fields["size"] in SIZES else None
    return fields["style"] if fields["style"] in shapes64.STYLES else None


def sample_instruction(rng: np.random.Generator, kind: str) -> tuple[EditPair, str]:
    """A random edit pair of ``kind`` and an instruction for it; ``parse_instruction`` reads it back."""
    pair = shapes64.sample_edit(rng, kind)  # type: ignore[arg-type]
    return pair, phrase(pair, rng)


def vocabulary() -> list[str]:
    """The captions' words and the instructions' words."""
    return [*shapes64.VOCABULARY, *INSTRUCTION_WORDS]


@dataclass
class Shapes64Instructions:
    """Training triplets from the world (entry point ``retouch.data_sources: shapes64-instructions``):
    the five kinds in turn, each with a phrasing drawn at random."""

    resolution: int = shapes64.CANVAS

    def sample_triplets(
        self, rng: np.random.Generator, n: int
    ) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
        """(n, 64, 64, 3) inputs, n instructions, (n, 64, 64, 3) edited pictures and (n, 64, 64)
        float edit regions (1 where the edit may change pixels)."""
        drawn = [sample_instruction(rng, KINDS[int(rng.integers(len(KINDS)))]) for _ in range(n)]
        sources = np.stack([pair.source.render() for pair, _ in drawn])
        targets = np.stack([pair.target.render() for pair, _ in drawn])
        regions = np.stack([pair.mask for pair, _ in drawn]).astype(np.float32)
        return sources, [text for _, text in drawn], targets, regions

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]:
        """The edited pictures with their instructions (the plain ``Source`` protocol)."""
        _, texts, targets, _ = self.sample_triplets(rng, n)
        return targets, texts

    def vocabulary(self) -> list[str]:
        return vocabulary()


@dataclass
class Shapes64Captions:
    """The grammar's (input caption, instruction, edited caption) triplets, no pictures: the
    captions ``retouch train instruct --data generated`` has the base model draw."""

    resolution: int = shapes64.CANVAS

    def sample_captions(self, rng: np.random.Generator) -> tuple[str, str, str]:
        pair, text = sample_instruction(rng, KINDS[int(rng.integers(len(KINDS)))])
        return pair.source_caption, text, pair.target_caption

    def vocabulary(self) -> list[str]:
        return vocabulary()


def generated_source(base: str | LoadedModel = "shapes-64", clip: str | None = None) -> GeneratedTriplets:
    """The paper's data route on this grammar (entry point ``retouch.data_sources: generated``):
    ``base`` (a name, or the model already loaded) draws the picture pairs, ``clip`` (default: the
    bundled shapes-64 CLIP) filters them."""
    from retouch.steer.pairs import GeneratedTriplets

    return GeneratedTriplets(Shapes64Captions(), base=base, clip=clip)


def scene_after(scene: Scene, instruction: str) -> Scene | None:
    """The scene ``instruction`` turns ``scene`` into (``None``: it names no edit)."""
    pair = parse_instruction(instruction, scene)
    return None if pair is None else pair.target


__all__ = [
    "INSTRUCTION_WORDS", "KINDS", "TEMPLATES", "Shapes64Captions", "Shapes64Instructions", "generated_source",
    "instruction_captions", "parse_instruction", "phrase", "sample_instruction", "scene_after", "vocabulary",
]
