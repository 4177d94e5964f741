"""The Generate, Steer, Imagic and PNG info tabs' handlers: plain functions over the Python API
that return what the components show (paths of saved files, captions, tables). They raise
``RetouchError`` on bad input; ``app`` shows it as a message."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from retouch.batch.replay import replay
from retouch.core.generate import generate
from retouch.edit.imagic import imagic
from retouch.errors import RetouchError
from retouch.io.convert import read_input_image
from retouch.io.outputs import next_index, numbered_stem
from retouch.io.png import PARAMETERS_KEY, read_recipe
from retouch.models.adapters import adapters_applied
from retouch.steer.interpolate import interpolate
from retouch.steer.style import style_sweep
from retouch.ui.edit_handlers import seed_value
from retouch.ui.session import UISession, public

Gallery = list[tuple[Path, str]]  # (picture, caption) pairs, as gr.Gallery takes them


def size_value(pixels: float | None) -> int | None:
    """A width or height box: empty or 0 means the model's training size."""
    return int(pixels) if pixels else None


def run_generate(
    session: UISession,
    prompt: str,
    negative_prompt: str = "",
    *,
    seed: str | float | None = None,
    steps: int = 25,
    scheduler: str = "euler-a",
    guidance_scale: float | None = None,
    width: float | None = None,
    height: float | None = None,
    num_images: int = 1,
    concepts: list[str] | None = None,
) -> Gallery:
    """``retouch generate`` (with the ``concepts`` picked by name): the pictures saved under
    outputs/generate/, each captioned by its seed."""
    with adapters_applied(session.model, concepts=session.concept_folders(concepts)) as model:
        result = generate(
            model,
            prompt,
            negative_prompt=negative_prompt or "",
            num_images=int(num_images),
            seed=seed_value(seed),
            steps=int(steps),
            guidance_scale=guidance_scale or None,
            scheduler=scheduler,
            width=size_value(width),
            height=size_value(height),
            progress=True,
        )
    files = result.save(session.folder("generate"))
    return [(path, f"seed {recipe['seed']}") for path, recipe in zip(files, result.recipes, strict=True)]


@dataclass
class InterpolateView:
    strip: Path  # every frame in one row
    animation: Path  # the looping GIF
    frames: Gallery


def run_interpolate(
    session: UISession,
    prompt_a: str,
    prompt_b: str,
    *,
    frames: int = 9,
    seed: str | float | None = None,
    steps: int = 25,
) -> InterpolateView:
    """``retouch interpolate``: the frames, their strip and GIF, saved under outputs/steer/."""
    result = interpolate(
        session.model, prompt_a, prompt_b, frames=int(frames), seed=seed_value(seed), steps=int(steps), progress=True
    )
    saved = result.save(session.folder("steer"))
    gallery = [(path, f"t = {t:.2f}") for path, t in zip(saved.files, result.ts, strict=True)]
    return InterpolateView(strip=saved.sheet, animation=saved.animation, frames=gallery)


def run_style_sweep(
    session: UISession,
    prompt: str,
    style: str,
    *,
    amount: float = 1.0,
    points: int = 5,
    seed: str | float | None = None,
    steps: int = 25,
) -> tuple[Path, Gallery]:
    """``retouch style --sweep 0:AMOUNT:POINTS``: the strip (weakest on the left) and each picture."""
    if not style.strip():
        raise RetouchError("type the style phrase to turn up or down (a phrase of the prompt, e.g. 'pastel')")
    sweep = f"0:{float(amount)}:{int(points)}"
    result = style_sweep(session.model, prompt, style, sweep, seed=seed_value(seed), steps=int(steps), progress=True)
    saved = result.save(session.folder("steer"))
    return saved.sheet, [(path, f"amount {a:g}") for path, a in zip(saved.files, result.amounts, strict=True)]


@dataclass
class ImagicView:
    image: Path  # the chosen picture, saved with its recipe
    sweep: Gallery  # every sampled picture with its eta, seed and judge score
    scores: list[dict[str, Any]]  # one row per sample: eta, seed, judge_score, accepted
    summary: str


def eta_value(text: str | float | None) -> float | str:
    text = str(text).strip() if text is not None else ""
    if text == "auto":
        return text
    try:
        return float(text or 0.7)
    except ValueError:
        raise RetouchError(f"eta must be a number in [0, 2] or 'auto', got {text!r}") from None


def run_imagic(
    session: UISession,
    picture: str | None,
    target: str,
    *,
    source: str = "",
    eta: str | float | None = None,
    seed: str | float | None = None,
    seeds: int = 1,
    steps: int = 25,
    embed_steps: float | None = None,
    tune_steps: float | None = None,
) -> ImagicView:
    """``retouch imagic``: the chosen picture and, for ``eta auto``, the sweep the judge scored."""
    if not picture:
        raise RetouchError("upload a picture to edit first")
    read_input_image(picture)
    kept = session.keep_input(picture)
    result = imagic(
        session.model,
        kept,
        target,
        eta=eta_value(eta),
        seed=seed_value(seed),
        seeds=int(seeds),
        steps=int(steps),
        source=source or None,
        embed_steps=None if embed_steps is None else int(embed_steps),
        tune_steps=None if tune_steps is None else int(tune_steps),
        cache_dir=session.imagic_cache,
        progress=True,
    )
    folder = session.folder("imagic")
    stem = numbered_stem(folder, result.report["seed"])
    auto = result.report.get("eta_mode") == "auto"
    files = result.save(stem.with_name(f"{stem.name}.png"), stem.with_name(f"{stem.name}.sweep") if auto else None)
    rows = [s.to_dict() for s in result.sweep]
    gallery = [
        (s.image, f"eta {s.eta:g}, seed {s.seed}, score {s.scores.get('judge_score', float('nan')):.2f}")
        for s in result.sweep
    ]
    report = result.report
    summary = f"eta **{report['eta']}** ({report['eta_mode']}), seed {report['seed']}, cache {report['cache']}"
    return ImagicView(image=files["image"], sweep=gallery, scores=public(rows), summary=summary)


@dataclass
class PngInfo:
    parameters: str  # AUTOMATIC1111's text, as stored (or made from the recipe)
    recipe: dict[str, Any]  # retouch's recipe (or the one read from A1111's text), no server paths
    caption: str  # the picture's caption, for "send to Edit"


def read_png_info(path: str | None) -> PngInfo:
    """The recipe a PNG carries: retouch's JSON and A1111's ``parameters`` text (also from A1111)."""
    if not path:
        raise RetouchError("drop a PNG made by retouch or AUTOMATIC1111 first")
    recipe = read_recipe(path)
    with Image.open(path) as image:
        parameters = str(image.info.get(PARAMETERS_KEY, ""))
    return PngInfo(parameters=parameters, recipe=public(recipe), caption=str(recipe.get("prompt", "")))


def generate_fields(recipe: dict[str, Any]) -> dict[str, Any]:
    """A recipe's settings, as the Generate tab's boxes take them (missing ones left out)."""
    names = ("prompt", "negative_prompt", "seed", "steps", "scheduler", "guidance_scale", "width", "height")
    fields = {name: recipe[name] for name in names if name in recipe}
    if "seed" in fields:  # the seed box is text: a browser number would lose digits
        fields["seed"] = str(fields["seed"])
    return fields


def run_replay(session: UISession, path: str | None) -> tuple[Path, str]:
    """``retouch replay`` with the loaded model: the new picture under outputs/replay/ and whether
    its pixels equal the dropped PNG's."""
    if not path:
        raise RetouchError("drop a PNG made by retouch first")
    folder = session.folder("replay")
    result = replay(path, folder / f"{next_index(folder):05d}-replay.png", session.model, progress=True)
    verdict = "identical, bit for bit" if result.identical else "different from the dropped PNG"
    return result.path, f"Replayed in {result.seconds:.1f} s: the pixels are **{verdict}**."
