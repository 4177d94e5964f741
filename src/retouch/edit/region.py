"""Which region an edit touches, decided from the two captions and the image itself.

Captions: a word-level diff. Captions an installed world reads (``retouch.core.world``, such as
shapes-64) give the region exactly (the field that differs); other captions go by rules: style
words -> global, a change in the scene phrase after the subject (background, sky, "in the ...",
"on a ...") -> background, else the subject -> foreground. Image: the DiffEdit difference map is
a compact blob away from the border for a foreground edit and has its mass on the border for a
background edit. The two are combined into one confidence; below ``min_confidence`` the decision
is refused with an error naming ``--region``.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retouch.core.prompts import CONCEPT_TOKEN_RE
from retouch.core.world import Region, World, world_for
from retouch.errors import RetouchError

REGIONS: tuple[Region, ...] = ("foreground", "background", "global")
STYLE_WORDS = frozenset(
    "pastel watercolor watercolour painting painted sketch sketched drawing drawn pencil charcoal "
    "oil acrylic cartoon anime comic photo photograph photographic photorealistic style impressionist "
    "impressionism cubist cubism surreal vintage sepia monochrome grayscale greyscale pixel lowpoly "
    "render rendering illustration engraving woodcut mosaic".split()
)
SCENE_WORDS = frozenset(
    "background backdrop scene sky skies wall walls room floor ground landscape field meadow beach "
    "sea ocean lake river forest woods jungle desert mountain mountains snow city street road park "
    "garden night day sunset sunrise weather space stage table".split()
)
# Words that open the scene phrase when they follow the subject ("a dog | on the beach").
SCENE_PREPOSITIONS = frozenset("on in at under against over behind near beside by inside outside".split())
SUBJECT_PREPOSITIONS = frozenset({"with", "wearing", "holding", "of"})  # "a man with a hat": still him
WEAR_WORDS = frozenset(
    "dress shirt hat cap coat jacket suit skirt trousers jeans shoes boots glasses sunglasses scarf "
    "uniform costume armor armour helmet mask gown robe sweater hoodie tie".split()
)  # "a woman in a red dress": the phrase describes the subject
COLOR_WORDS = frozenset(
    "red orange yellow green blue purple violet pink white black gray grey brown beige cyan magenta "
    "turquoise teal navy maroon gold golden silver crimson scarlet".split()
)  # a change of these words alone recolours the subject: its outline stays
ARTICLES = frozenset({"a", "an", "the"})
BORDER_EVEN = 0.6  # image_evidence: the border ratio at which foreground and background are even odds
STYLE_PHRASE = re.compile(r"\bin the style of\b|\bstyle of\b|\bart by\b")


@dataclass
class RegionGuess:
    region: Region
    confidence: float  # in [0, 1]
    exact: bool = False  # read from canonical captions: needs no image evidence
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class RegionDecision:
    region: Region
    confidence: float
    evidence: dict[str, Any]  # what the captions and the image each said


def words(caption: str) -> list[str]:
    return re.findall(r"[a-z0-9']+|,", caption.lower())


def check_captions_differ(source: str, target: str) -> None:
    """Raises RetouchError when the captions name no change (same words; case, spacing and commas aside)."""
    if [w for w in words(source) if w != ","] == [w for w in words(target) if w != ","]:
        raise RetouchError(
            f"the source and target captions name no change ({source!r}); write the target caption "
            "as the picture you want, or pass --mask PNG or --region global"
        )


def caption_region(source: str, target: str) -> RegionGuess:
    """The region the captions' difference names.

    Raises:
        RetouchError: the captions name no change.
    """
    check_captions_differ(source, target)
    world = world_for([source, target])
    concept = None if world is not None else concept_fields(source, target)
    if world is not None or concept is not None:
        world, changed = (world, changed_fields(world, source, target)) if concept is None else concept
        rule = f"{world.name} fields" + (", a concept token in place of a word" if concept else "")
        return RegionGuess(fields_region(world, changed), 1.0, True, {"rule": rule, "changed": changed})

    source_words, target_words = words(source), words(target)
    spans = changed_spans(source_words, target_words)
    changed_words = [w for ws, a, b in spans for w in ws[a:b] if w != ","]
    evidence: dict[str, Any] = {"rule": "caption words", "changed": changed_words}
    if STYLE_WORDS & set(changed_words) or (
        bool(STYLE_PHRASE.search(" ".join(target_words))) != bool(STYLE_PHRASE.search(" ".join(source_words)))
    ):
        return RegionGuess("global", 0.85, False, {**evidence, "cue": "style words"})
    votes = [_span_region(ws, a, b) for ws, a, b in spans if any(w != "," for w in ws[a:b])]
    background = sum(v == "background" for v in votes)
    region = "background" if background * 2 > len(votes) else "foreground"
    agreement = max(background, len(votes) - background) / max(len(votes), 1)
    return RegionGuess(region, 0.8 * agreement, False, {**evidence, "cue": f"{region} phrase"})


def fields_region(world: World, changed: list[str]) -> Region:
    """The region a change of ``changed`` fields touches: theirs when they agree, else global."""
    regions = {world.field_region(k) for k in changed}
    return regions.pop() if len(regions) == 1 else "global"


Lacking = tuple[World, list[str]]  # a world and the fields of a caption its oracle does not read in a picture


def picture_changes(picture: np.ndarray, target: str) -> Lacking | None:
    """With no source caption, what the picture lacks of ``target``: the world that reads
    ``target`` and the fields its oracle does not read in ``picture`` (sorted), or None (a free
    caption, a picture the oracle cannot read, or nothing missing)."""
    world = world_for([target])
    hits = world.match(picture, target) if world is not None else None
    if world is None or hits is None:
        return None
    changed = sorted(k for k in world.parse_caption(target) or {} if not hits.get(k, True))
    return (world, changed) if changed else None


def picture_region(lacking: Lacking) -> RegionGuess:
    """The region of the fields a picture lacks (``picture_changes``): the input read back by the
    world's oracle stands in for a source caption."""
    world, changed = lacking
    evidence = {"rule": f"{world.name} fields the picture lacks", "changed": changed}
    return RegionGuess(fields_region(world, changed), 1.0, True, evidence)


def is_recolor(source: str, target: str) -> bool:
    """True when the captions differ in colour words only ("a red car" -> "a blue car"): the edit
    keeps the subject's outline, so the mask may snap to the object as the input shows it."""
    world = world_for([source, target])
    if world is not None:
        return changed_fields(world, source, target) == ["color"]
    changed = {w for ws, a, b in changed_spans(words(source), words(target)) for w in ws[a:b] if w != ","}
    return bool(changed) and changed <= COLOR_WORDS


def changed_spans(source_words: list[str], target_words: list[str]) -> list[tuple[list[str], int, int]]:
    """The word spans a diff of the two captions marks as changed, as ``(words, start, end)``:
    the source's spans first, then the target's."""
    opcodes = difflib.SequenceMatcher(a=source_words, b=target_words, autojunk=False).get_opcodes()
    return [(source_words, i1, i2) for tag, i1, i2, _, _ in opcodes if tag != "equal"] + [
        (target_words, j1, j2) for tag, _, _, j1, j2 in opcodes if tag != "equal"
    ]


def concept_fields(source: str, target: str) -> tuple[World, list[str]] | None:
    """For a target caption with a concept token where the source has a word ("a large red circle
    ..." -> "a large red <star> ..."): the world that reads the source and the target with the
    source's words put back, and the fields that change, the field of each replaced word included
    (here ``shape``: the foreground object becomes the concept). None when no world reads them."""
    source_words, target_words = source.split(), target.split()
    spots = [i for i, word in enumerate(target_words) if CONCEPT_TOKEN_RE.fullmatch(word.rstrip(","))]
    if not spots or len(source_words) != len(target_words):
        return None
    stand_in = [source_words[i] if i in spots else word for i, word in enumerate(target_words)]
    world = world_for([source, " ".join(stand_in)])
    if world is None:
        return None
    source_fields = world.parse_caption(source) or {}
    replaced = {source_words[i].rstrip(",") for i in spots}
    concept = {k for k, value in source_fields.items() if value in replaced}
    return world, sorted(concept | set(changed_fields(world, source, " ".join(stand_in))))


def changed_fields(world: World, source: str, target: str) -> list[str]:
    """The fields of two captions ``world`` reads that differ, sorted by name."""
    source_fields, target_fields = world.parse_caption(source) or {}, world.parse_caption(target) or {}
    return sorted(k for k in source_fields if source_fields[k] != target_fields.get(k))


def _span_region(ws: list[str], start: int, end: int) -> Region:
    """A changed span ``ws[start:end]`` is background when it names a scene word, or when it sits in
    a phrase opened by a comma or a scene preposition after the subject ("a dog | on the beach")
    that does not describe the subject ("in a red dress", "with a hat")."""
    if SCENE_WORDS & set(ws[start:end]):
        return "background"
    boundaries = SCENE_PREPOSITIONS | SUBJECT_PREPOSITIONS | {","}
    subject = next((k for k, w in enumerate(ws) if w not in ARTICLES and w not in boundaries), len(ws))
    opener = next((k for k in range(start - 1, subject, -1) if ws[k] in boundaries), None)
    if opener is None or ws[opener] in SUBJECT_PREPOSITIONS:
        return "foreground"
    closer = next((k for k in range(end, len(ws)) if ws[k] in boundaries), len(ws))
    return "foreground" if WEAR_WORDS & set(ws[opener:closer]) else "background"


def image_evidence(normalized_map: np.ndarray) -> dict[str, float]:
    """What the DiffEdit map says: foreground when its mass sits away from the border.

    ``border``: the map's mean on the 1-latent ring relative to its mean overall: near 0 for a
    blob in the middle, about 1 or more for a background (or global) change. ``p_background`` is a
    logistic of its log, even odds at ``BORDER_EVEN``.
    """
    ring = np.ones(normalized_map.shape, dtype=bool)
    ring[1:-1, 1:-1] = False
    overall = float(normalized_map.mean())
    if overall <= 0:
        return {"border": 1.0, "p_background": 0.5, "area": 0.0}
    border = float(normalized_map[ring].mean()) / overall
    p_background = 1.0 / (1.0 + math.exp(-4.0 * math.log(max(border, 1e-6) / BORDER_EVEN)))
    return {"border": border, "p_background": p_background, "area": float((normalized_map > 0.5).mean())}


def combine(
    guess: RegionGuess,
    evidence: dict[str, float] | None,
    caption_weight: float = 0.6,
    min_confidence: float = 0.55,
) -> RegionDecision:
    """Weigh the caption's guess with the image's foreground/background evidence.

    Exact (canonical) guesses stand alone. A global guess is the captions' alone: the map of a
    style change is spread everywhere, which the border test cannot tell from a background edit.

    Raises:
        RetouchError: the combined confidence is below ``min_confidence``.
    """
    report: dict[str, Any] = {"captions": guess.evidence | {"region": guess.region}, "image": evidence}
    if guess.exact or evidence is None or guess.region == "global":
        region, confidence = guess.region, guess.confidence
    else:
        p_background = evidence["p_background"]
        caption_bg = guess.confidence if guess.region == "background" else 1.0 - guess.confidence
        score_bg = caption_weight * caption_bg + (1 - caption_weight) * p_background
        region = "background" if score_bg > 0.5 else "foreground"
        confidence = max(score_bg, 1.0 - score_bg)
    if confidence < min_confidence:
        raise RetouchError(
            f"cannot tell which region the edit touches (best guess {region}, confidence "
            f"{confidence:.2f} < {min_confidence}); pass --region foreground, background or global, "
            "or --mask PNG"
        )
    return RegionDecision(region, round(confidence, 4), report)
