"""The style amount chosen by a judge: ``retouch style PROMPT --style PHRASE --amount auto``.

How much style a prompt needs depends on the prompt and the seed: a small amount may not show
the style at all, a large one breaks the picture apart. ``stylize_auto`` draws the plain picture
(amount 0, the prompt as written) and the same seed at every amount of a grid, and lets a judge
(``retouch.edit.judge``) score each against the styled caption (the prompt with the phrase):

- on a world's captions (shapes-64) the oracle, which also checks that the object stayed where
  the plain picture has it, and scores how close each field is to the caption;
- on any other caption a CLIP model folder (``--judge``; default: the bundled shapes-64 CLIP),
  which accepts a picture whose similarity to the styled caption gained over the plain picture's.

The choice is the rule every automatic sweep in retouch uses (``judge.best_kept``): among the
accepted pictures, the highest judge score (near-ties: the one nearest the plain picture, then the
smaller amount). The recipe records the amount chosen, so it replays that one picture bit for bit.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from diffusers import StableDiffusionPipeline

from retouch.core.generate import GenerateResult
from retouch.core.limits import check_number
from retouch.core.seeding import random_seed
from retouch.edit.judge import RULE_ACCEPTED, JudgeSpec, best_kept, make_named_judge
from retouch.errors import RetouchError
from retouch.metrics.masked import masked_psnr
from retouch.models.loading import LoadedModel
from retouch.steer.style import DEFAULT_STYLE_DIRECTION, StyleDirection, check_direction, stylize

# 0.0, 0.2, ..., 2.0: up to the top of the range where pictures hold together (style.SAFE_AMOUNTS).
# On shapes-64, "pastel" added by its phrase's direction shows at 1.5 or 2.0 only; when the prompt
# holds the phrase, the plain prompt (0.0) often shows it already.
AUTO_AMOUNTS: tuple[float, ...] = tuple(round(0.2 * i, 1) for i in range(11))


@dataclass
class StyleAutoResult(GenerateResult):
    """The chosen picture (``images[0]``) and its recipe, with the sweep and the choice."""

    report: dict[str, Any] = field(default_factory=dict)  # judge, rule, amount, sweep rows


def styled_caption(prompt: str, phrase: str) -> str:
    """The caption the judge reads the style against: ``prompt`` when it holds ``phrase``, else
    ``prompt, phrase`` (shapes-64's form: "a large red circle on a blue background, pastel")."""
    if re.search(rf"(?<!\w){re.escape(phrase.strip())}(?!\w)", prompt, re.IGNORECASE):
        return prompt
    return f"{prompt.rstrip(' ,')}, {phrase.strip()}"


def stylize_auto(
    model: LoadedModel | StableDiffusionPipeline,
    prompt: str,
    style: str,
    direction: StyleDirection = DEFAULT_STYLE_DIRECTION,
    *,
    seed: int | None = None,
    judge: JudgeSpec = None,
    judge_caption: str | None = None,
    amounts: Sequence[float] = AUTO_AMOUNTS,
    **kwargs: Any,
) -> StyleAutoResult:
    """``stylize`` at every amount of ``amounts`` with one seed; the judged best (see the module).

    Args:
        judge: ``"oracle"``, a CLIP model folder or a ``picture -> (score, took)`` function;
            None: the oracle for a world's caption, else the bundled CLIP.
        judge_caption: what the judge reads the pictures against (default: ``styled_caption``).
        kwargs: ``stylize``'s (negative prompt, steps, guidance scale, scheduler, size, progress).

    Raises:
        RetouchError: bad amounts, more than one picture asked for, or no usable judge.
    """
    check_direction(direction)
    if not amounts:
        raise RetouchError("an automatic style amount needs at least one amount to try")
    for amount in amounts:
        check_number("amount", amount)
    if kwargs.get("num_images", 1) != 1:
        raise RetouchError("--amount auto chooses one picture; pass --num-images 1 (or a fixed --amount)")
    started, seed = time.perf_counter(), random_seed() if seed is None else seed
    plain = stylize(model, prompt, style, 0.0, direction, seed=seed, **kwargs)
    reference = np.asarray(plain.images[0])
    device = (model.pipe if isinstance(model, LoadedModel) else model).device
    target = judge_caption or styled_caption(prompt, style)
    judge_fn, judge_name = make_named_judge(judge, None, target, device, reference)
    rows, results = [], []
    for amount in amounts:
        result = plain if amount == 0 else stylize(model, prompt, style, amount, direction, seed=seed, **kwargs)
        picture = np.asarray(result.images[0])
        score, took = judge_fn(result.images[0])
        psnr = masked_psnr(reference, picture, np.ones(picture.shape[:2], dtype=bool))
        row = {"amount": float(amount), "judge_score": float(score), "accepted": bool(took)}
        rows.append(row | {"psnr_to_plain": psnr if np.isfinite(psnr) else None})
        results.append(result)
    index, accepted = best_kept(
        [r["judge_score"] for r in rows],
        [r["accepted"] for r in rows],
        [(r["psnr_to_plain"] if r["psnr_to_plain"] is not None else 1e9, -abs(r["amount"])) for r in rows],
    )
    chosen = results[index]
    report = {
        "amount": rows[index]["amount"],
        "judge": judge_name,
        "judge_caption": target,
        "accepted": accepted,
        "rule": RULE_ACCEPTED if accepted else "no amount accepted: highest judge score; ties: nearest the plain",
        "sweep": rows,
        "seconds": time.perf_counter() - started,
    }
    return StyleAutoResult(chosen.images, chosen.recipes, [report["seconds"]], report)
