"""Judges for ``strength="auto"`` (edit) and ``eta="auto"`` (Imagic): did the edit take?

One factory, ``make_judge``, with one default. A judge is ``picture -> (score, took)``:

- ``oracle``: a picture world (``retouch.core.world``, e.g. shapes-64) that reads the target
  caption reads the picture back; the edit took when every field matches the caption (and, given
  the input picture, the object stayed in place); the score is continuous where the world can
  say how close each field is (shapes-64: colour distance to the palette, shape IoU, ...).
- a CLIP model folder (loaded by ``retouch.metrics.clip_score.ClipScorer``): with a source
  caption, the edit took when the picture is closer to the target caption than to the source
  (CLIP similarity difference > 0, as in directional CLIP scores); without one, when the
  picture's similarity to the target gained ``DEFAULT_CLIP_GAIN`` over the input's.
- ``None`` (the default): the oracle when an installed world reads the target caption, else
  the bundled shapes-64 CLIP when installed, else an error that says what to pass.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from retouch.core.world import World, closeness_of, world_for
from retouch.edit.strength import Judge
from retouch.errors import RetouchError
from retouch.metrics import clip_score
from retouch.metrics.weights import MissingWeights

DEFAULT_CLIP_GAIN = 0.05  # CLIP judge without a source caption: cosine gain over the input to accept
JudgeSpec = str | os.PathLike[str] | Judge | None


def oracle_judge(
    target_prompt: str, world: World | None = None, reference: Image.Image | np.ndarray | None = None
) -> Judge:
    """The world's judge. ``world`` defaults to the installed world that reads ``target_prompt``.

    With the world's continuous reading (``retouch.core.world.closeness_of``, as shapes-64 has):
    score: the mean closeness of the picture's fields to the caption's (and of the object's place
    to the ``reference`` picture's), in [0, 1]; took: the oracle reads every field back and, with a
    reference, the object moved at most half the world's place scale (4 px on shapes-64). Without
    it: score: the fraction of fields read back; took: all of them.
    """
    world = world or world_for([target_prompt])
    if world is None:
        raise RetouchError(
            f"--judge oracle needs a target caption an installed world reads (such as a canonical shapes-64 "
            f"caption), got {target_prompt!r}; pass --judge PATH to a CLIP model folder instead"
        )
    closeness = closeness_of(world)
    before = reference.convert("RGB") if isinstance(reference, Image.Image) else reference
    before = None if before is None else np.asarray(before)

    def judge(image: Image.Image) -> tuple[float, bool]:
        picture = np.asarray(image.convert("RGB"))
        match = world.match(picture, target_prompt)
        if match is None:
            raise RetouchError(f"--judge oracle: the {world.name} oracle cannot read a picture of {image.size}")
        hits = [hit for name, hit in match.items() if name != "all"]
        near = None if closeness is None else closeness(picture, target_prompt, before)
        if near is None:
            return sum(hits) / len(hits), all(hits)
        return float(np.mean(list(near.values()))), all(hits) and near.get("position", 1.0) >= 0.5

    return judge


def load_clip(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> clip_score.ClipScorer:
    """The CLIP a judge scores with, from a local folder (``ClipScorer.load``)."""
    try:
        return clip_score.ClipScorer.load(Path(path).expanduser(), device)
    except MissingWeights as e:
        raise RetouchError(f"cannot load the CLIP judge from {path} ({e}); or pass --judge oracle") from e


def clip_judge(
    path: str | os.PathLike[str], source_prompt: str, target_prompt: str, device: str | torch.device = "cpu"
) -> Judge:
    """Score: cosine similarity to the target caption minus that to the source caption; took: > 0."""
    scorer = load_clip(path, device)
    text = scorer.text_features([source_prompt, target_prompt])  # (2, dim)

    def judge(image: Image.Image) -> tuple[float, bool]:
        source_sim, target_sim = (scorer.image_features([image]) @ text.T)[0].tolist()
        score = target_sim - source_sim
        return score, score > 0

    return judge


def clip_gain_judge(
    path: str | os.PathLike[str],
    target_prompt: str,
    reference: Image.Image | np.ndarray,
    device: str | torch.device = "cpu",
    gain: float = DEFAULT_CLIP_GAIN,
) -> Judge:
    """Without a source caption: score: the picture's cosine similarity to the target caption
    minus the ``reference`` picture's (the input); took: at least ``gain``."""
    scorer = load_clip(path, device)
    text = scorer.text_features([target_prompt])  # (1, dim)
    baseline = float(scorer.image_features([reference]) @ text.T)

    def judge(image: Image.Image) -> tuple[float, bool]:
        score = float(scorer.image_features([image]) @ text.T) - baseline
        return score, score >= gain

    return judge


def make_named_judge(
    spec: JudgeSpec,
    source_prompt: str | None,
    target_prompt: str,
    device: str | torch.device = "cpu",
    reference: Image.Image | np.ndarray | None = None,
) -> tuple[Judge, str]:
    """``make_judge`` and the judge's name, for reports."""
    if callable(spec):
        return spec, getattr(spec, "__name__", type(spec).__name__)
    if spec is None and world_for([target_prompt]) is not None:
        spec = "oracle"
    if str(spec) == "oracle":
        name = "oracle" if reference is None else "oracle (in place)"
        return oracle_judge(target_prompt, reference=reference), name
    if spec is None:
        spec = clip_score.bundled_clip_path()
        if not (spec / "config.json").is_file():
            raise RetouchError(
                "choosing the strength or eta automatically needs a judge: pass --judge PATH to a local CLIP "
                f"model folder, or install the shapes-64 CLIP at {spec} (the oracle judges only target "
                "captions an installed world reads)"
            )
    if source_prompt:
        return clip_judge(spec, source_prompt, target_prompt, device), f"clip:{spec} (target vs source caption)"
    if reference is None:
        raise RetouchError("a CLIP judge without a source caption needs the input picture (reference)")
    judge = clip_gain_judge(spec, target_prompt, reference, device)
    return judge, f"clip:{spec} (gain over the input >= {DEFAULT_CLIP_GAIN})"


def make_judge(
    spec: JudgeSpec,
    source_prompt: str | None,
    target_prompt: str,
    device: str | torch.device = "cpu",
    reference: Image.Image | np.ndarray | None = None,
) -> Judge:
    """The judge ``spec`` names: a function, ``"oracle"``, a CLIP folder, or ``None`` for the
    default (see the module docstring). ``reference`` (the input picture) is needed only by a
    CLIP judge without ``source_prompt``."""
    return make_named_judge(spec, source_prompt, target_prompt, device, reference)[0]


SCORE_TIE = 0.1  # judge scores within this share of the sweep's score spread of the best count as ties


def best_kept(scores: list[float], accepted: list[bool], kept: list[Any]) -> tuple[int, bool]:
    """The rule every automatic sweep (Imagic's eta, the style amount) chooses by: the best edit
    that keeps the input. Among the accepted pictures, those whose judge score is within
    ``SCORE_TIE`` of the sweep's score spread of the best accepted score, and of these the one
    that keeps the input best (``kept``: comparable, higher is better; ties: the first). When none
    is accepted, the highest judge score (ties: ``kept``). Returns (the index, whether any was
    accepted). With a continuous judge this takes a clean edit over the first that merely passes."""
    order = range(len(scores))
    took = [i for i in order if accepted[i]]
    if took:
        best = max(scores[i] for i in took)
        tie = SCORE_TIE * (max(scores) - min(scores))
        near = [i for i in took if scores[i] >= best - tie]
        return max(near, key=lambda i: (kept[i], -i)), True
    return max(order, key=lambda i: (scores[i], kept[i], -i)), False


RULE_ACCEPTED = f"highest judge score among the accepted (ties within {SCORE_TIE:g} of the spread): best preservation"
