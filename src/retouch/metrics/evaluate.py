"""``retouch evaluate``'s library side: score a folder of outputs, an Imagic eta sweep, or an
SDEdit strength sweep.

Every metric whose network is missing is skipped with a note naming the file it needs; the others
still run. PSNR and SSIM (inside and outside a mask) need no weights and always run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from retouch.errors import RetouchError
from retouch.io.images import load_image
from retouch.metrics.clip_score import ClipScorer
from retouch.metrics.fid import FeatureFn, fid_from_features, kid_from_features, load_inception
from retouch.metrics.lpips import LPIPS, load_lpips, lpips_distance
from retouch.metrics.masked import masked_metrics
from retouch.metrics.oracle import oracle_accuracy, oracle_match
from retouch.metrics.report import json_safe
from retouch.metrics.weights import MissingWeights
from retouch.models.loading import LoadedModel

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SKIPPED_SUFFIXES = (".mask.png", ".layer.png")  # an edit's side files, not outputs
FidFeatures = Literal["inception", "clip"]


@dataclass
class Scorers:
    """The metric networks found; ``notes`` says which are missing and what they need."""

    clip: ClipScorer | None = None
    lpips: LPIPS | None = None
    inception: FeatureFn | None = None
    notes: list[str] = field(default_factory=list)


def load_scorers(
    clip: str | os.PathLike[str] | None = None,
    lpips_weights: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    inception: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    want: Sequence[str] = ("clip", "lpips", "inception"),
) -> Scorers:
    """Load what is wanted and present; a missing network becomes a note, not an error."""
    scorers = Scorers()
    loaders = {
        "clip": ("CLIP score", lambda: ClipScorer.load(clip, device)),
        "lpips": ("LPIPS", lambda: load_lpips(lpips_weights, device)),
        "inception": ("FID/KID", lambda: load_inception(inception, device)),
    }
    for name in want:
        label, load = loaders[name]
        try:
            setattr(scorers, name, load())
        except MissingWeights as e:
            scorers.notes.append(f"{label} skipped: {e}")
    return scorers


@dataclass
class Evaluation:
    rows: list[dict[str, Any]]  # one per picture
    summary: dict[str, Any]  # means, FID, KID, oracle accuracy
    notes: list[str]


def read_captions(path: str | os.PathLike[str]) -> dict[str, str]:
    """JSONL rows ``{"file_name": ..., "text": ...}`` (the imagefolder convention) -> name: caption."""
    path = Path(path)
    if not path.is_file():
        raise RetouchError(f"captions file not found: {path}")
    captions = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            captions[Path(row["file_name"]).name] = str(row.get("text", row.get("caption")))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise RetouchError(f"{path}:{number}: expected {{\"file_name\": ..., \"text\": ...}} ({e})") from e
    return captions


def recipe_caption(path: Path) -> str | None:
    """What a retouch PNG was made to show: an edit's target caption, else its prompt."""
    from retouch.io.png import read_recipe

    try:
        recipe = read_recipe(path)
    except RetouchError:
        return None
    caption = recipe.get("target") or recipe.get("prompt")
    return str(caption) if caption else None


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise RetouchError(f"not a folder: {folder}")
    return sorted(
        p for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.lower().endswith(SKIPPED_SUFFIXES)
    )  # fmt: skip


def _match(folder: Path | None, name: str) -> Path | None:
    """The file of ``folder`` named ``name``, or with the same stem and another image suffix."""
    if folder is None:
        return None
    for candidate in (folder / name, *(folder / (Path(name).stem + s) for s in IMAGE_SUFFIXES)):
        if candidate.is_file():
            return candidate
    return None


def evaluate_images(
    images: str | os.PathLike[str],
    references: str | os.PathLike[str] | None = None,
    masks: str | os.PathLike[str] | None = None,
    captions: str | os.PathLike[str] | None = None,
    scorers: Scorers | None = None,
    fid_features: FidFeatures = "inception",
) -> Evaluation:
    """Score every picture in ``images`` against its caption (``captions`` JSONL, else the PNG's
    recipe) and its reference (same file name in ``references``), inside and outside its mask
    (same file name in ``masks``, white = inside); FID and KID between the two folders."""
    scorers = scorers or Scorers()
    notes = list(scorers.notes)
    paths = list_images(images)
    if not paths:
        raise RetouchError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images}")
    caption_of = read_captions(captions) if captions else {}
    ref_dir, mask_dir = (Path(p) if p else None for p in (references, masks))
    rows, outputs, reference_pictures = [], [], []
    for path in paths:
        picture = np.asarray(load_image(path))
        caption = caption_of.get(path.name) if captions else recipe_caption(path)
        row: dict[str, Any] = {"file": path.name, "caption": caption}
        ref_path = _match(ref_dir, path.name)
        reference = np.asarray(load_image(ref_path)) if ref_path else None
        if reference is not None and reference.shape != picture.shape:
            notes.append(f"{path.name}: reference {ref_path.name} is {reference.shape[1]}x{reference.shape[0]}, "
                         f"the image {picture.shape[1]}x{picture.shape[0]}; reference metrics skipped")  # fmt: skip
            reference = None
        if reference is not None:
            reference_pictures.append(reference)
            row.update(_reference_metrics(picture, reference, _mask(mask_dir, path.name, picture), scorers))
        if caption is not None and (match := oracle_match(picture, caption)) is not None:
            row.update({f"oracle_{k}": v for k, v in match.items()})
        rows.append(row)
        outputs.append(picture)

    if scorers.clip is not None:  # one batched pass
        captioned = [k for k, row in enumerate(rows) if row["caption"] is not None]
        scores = scorers.clip.score([outputs[k] for k in captioned], [rows[k]["caption"] for k in captioned])
        for k, score in zip(captioned, scores, strict=True):
            rows[k]["clip_score"] = score
    summary = _means(rows)
    summary["n"] = len(rows)
    scored = [(p, r["caption"]) for p, r in zip(outputs, rows, strict=True) if r["caption"] is not None]
    accuracy = oracle_accuracy([p for p, _ in scored], [c for _, c in scored]) if scored else None
    if accuracy is not None:
        summary.update({f"oracle_{k}": v for k, v in accuracy.items()})
    if reference_pictures:
        summary.update(_set_metrics(outputs, reference_pictures, scorers, fid_features, notes))
    elif ref_dir is None:
        notes.append("FID/KID and reference metrics skipped: pass --references DIR (matched by file name)")
    else:
        notes.append(f"FID/KID and reference metrics skipped: no file in {ref_dir} matches an image's name")
    return Evaluation(rows, summary, notes)


def _mask(folder: Path | None, name: str, picture: np.ndarray) -> np.ndarray | None:
    path = _match(folder, name)
    if path is None:
        return None
    mask = load_image(path, mode="L")
    if mask.size != (picture.shape[1], picture.shape[0]):
        raise RetouchError(
            f"the mask {path} is {mask.size[0]}x{mask.size[1]}, its image {picture.shape[1]}x{picture.shape[0]}"
        )
    return np.asarray(mask) > 127


def _reference_metrics(
    picture: np.ndarray, reference: np.ndarray, mask: np.ndarray | None, scorers: Scorers
) -> dict[str, Any]:
    everywhere = np.ones(picture.shape[:2], dtype=bool)
    whole = masked_metrics(reference, picture, everywhere)["inside"]
    row: dict[str, Any] = {"psnr": whole["psnr"], "ssim": whole["ssim"]}
    if mask is not None:
        for part, values in masked_metrics(reference, picture, mask).items():
            row[f"psnr_{part}"], row[f"ssim_{part}"] = values["psnr"], values["ssim"]
    if scorers.lpips is not None:
        row["lpips"] = lpips_distance(scorers.lpips, reference, picture)
    return row


def _means(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each numeric column over its finite values (PSNR's inf = identical is left out)."""
    means = {}
    for key in dict.fromkeys(k for row in rows for k in row):
        values = [r[key] for r in rows if isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)]
        finite = [float(v) for v in values if math.isfinite(v)]
        if finite and not key.startswith("oracle_"):
            means[f"mean_{key}"] = float(np.mean(finite))
    return means


def _set_metrics(
    outputs: list[np.ndarray],
    references: list[np.ndarray],
    scorers: Scorers,
    fid_features: FidFeatures,
    notes: list[str],
) -> dict[str, float]:
    if fid_features == "clip":
        if scorers.clip is None:
            notes.append("FID/KID skipped: --fid-features clip needs a CLIP model (--clip)")
            return {}
        features = lambda pictures: scorers.clip.image_features(pictures).cpu().numpy()  # noqa: E731
    elif scorers.inception is None:
        return {}
    else:
        features = scorers.inception
    if min(len(outputs), len(references)) < 2:
        notes.append("FID/KID skipped: they need at least 2 pictures on each side")
        return {}
    a, b = features(outputs), features(references)
    if min(len(outputs), len(references)) < a.shape[1]:
        notes.append(f"FID from {min(len(outputs), len(references))} pictures of {a.shape[1]}-d features "
                     "is biased and noisy (use thousands); KID is unbiased")  # fmt: skip
    return {"fid": fid_from_features(a, b), "kid": kid_from_features(a, b), "fid_features": fid_features}


# ---------------------------------------------------------------------------------------------
# Sweeps: one edit at several settings, scored for faithfulness and for the edit.


def imagic_sweep_scores(report: dict[str, Any], scorers: Scorers) -> list[dict[str, Any]]:
    """Per eta (seeds averaged): CLIP score to the target and 1 - LPIPS to the input, from the
    sweep's saved pictures (``retouch imagic --eta auto`` writes them), plus the report's own
    judge score and PSNR."""
    sweep, target = report.get("sweep") or [], report.get("target")
    source_path = report.get("image")
    source = np.asarray(load_image(source_path)) if source_path and Path(source_path).is_file() else None
    by_eta: dict[float, list[dict[str, Any]]] = {}
    for entry in sweep:
        row = {k: entry.get(k) for k in ("judge_score", "psnr", "ssim", "lpips")}
        file = entry.get("file")
        if file and Path(file).is_file():
            picture = np.asarray(load_image(file))
            if scorers.clip is not None and target:
                row["clip_score"] = scorers.clip.score([picture], [target])[0]
            if scorers.lpips is not None and source is not None and source.shape == picture.shape:
                row["lpips"] = lpips_distance(scorers.lpips, source, picture)
        by_eta.setdefault(float(entry["eta"]), []).append(row)
    rows = []
    for eta, entries in sorted(by_eta.items()):
        row: dict[str, Any] = {"eta": eta, "seeds": len(entries)}
        for key in ("clip_score", "lpips", "judge_score", "psnr", "ssim"):
            values = [float(e[key]) for e in entries if e.get(key) is not None]
            row[key] = float(np.mean(values)) if values else None
        row["1-lpips"] = None if row["lpips"] is None else 1.0 - row["lpips"]
        rows.append(row)
    return rows


def sdedit_sweep(
    model: LoadedModel,
    image: str | os.PathLike[str],
    source: str,
    target: str,
    strengths: Sequence[float],
    scorers: Scorers,
    seed: int = 0,
    steps: int = 25,
) -> tuple[list[dict[str, Any]], list[tuple[Image.Image, dict[str, Any]]]]:
    """SDEdit (``retouch.edit``, method sdedit) at each strength: faithfulness to the input (PSNR,
    SSIM, 1 - LPIPS) and the edit (CLIP score to the target, its margin over the source caption,
    and on canonical shapes-64 captions whether the oracle reads the target). Returns the rows and
    each strength's (picture, recipe)."""
    from retouch.edit import edit

    pixels = np.asarray(load_image(image))
    rows, pictures = [], []
    for strength in strengths:
        result = edit(
            model, image, source, target, method="sdedit", strength=float(strength), seed=seed, steps=steps
        )
        picture = np.asarray(result.image)
        row: dict[str, Any] = {"strength": float(strength)}
        row.update(_reference_metrics(picture, pixels, None, scorers))
        row["1-lpips"] = 1.0 - row["lpips"] if "lpips" in row else None
        if scorers.clip is not None:
            similarity = scorers.clip.similarity([picture], [target, source])[0]
            row["clip_score"], row["clip_margin"] = float(similarity[0]), float(similarity[0] - similarity[1])
        if (match := oracle_match(picture, target)) is not None:
            row["oracle_target"] = match["all"]
        rows.append(row)
        pictures.append((result.image, result.recipe))
    return rows, pictures


def sweep_series(rows: list[dict[str, Any]], keys: Sequence[tuple[str, str]]) -> dict[str, list[float | None]]:
    """{label: column} for the columns of ``keys`` (column, label) that have any value."""
    series = {}
    for key, label in keys:
        values = [json_safe(r.get(key)) for r in rows]
        values = [float(v) if isinstance(v, int | float) else None for v in values]
        if any(v is not None for v in values):
            series[label] = values
    return series

