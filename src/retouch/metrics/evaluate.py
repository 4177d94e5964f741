"""``retouch evaluate``'s library side: score a folder of outputs, or an Imagic eta sweep (the
SDEdit strength sweep runs edits, so it lives in ``retouch.edit.sweep``). Each returns an
``Evaluation`` whose ``save`` writes its tables, plot and pictures.

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
from retouch.io.png import save_png
from retouch.metrics.clip_score import ClipScorer
from retouch.metrics.fid import FeatureFn, fid_from_features, kid_from_features, load_inception
from retouch.metrics.lpips import LPIPS, load_lpips, lpips_distance
from retouch.metrics.masked import masked_metrics
from retouch.metrics.oracle import oracle_accuracy, oracle_match
from retouch.metrics.report import Curves, json_safe, write_tables
from retouch.metrics.weights import MissingWeights

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
    """Scores, one row per picture or setting, and what ``save`` writes beside them."""

    rows: list[dict[str, Any]]  # one per picture (a folder) or per setting (a sweep)
    summary: dict[str, Any]  # means, FID, KID, oracle accuracy; the tables' summary section
    notes: list[str]  # metrics skipped and why, caveats
    name: str = "metrics"  # the tables' file stem: NAME.md, NAME.csv, NAME.json
    counts: dict[str, int] = field(default_factory=dict)  # printed with the summary, not in the tables
    curves: Curves | None = None  # a plot of the rows, for sweeps
    pictures: dict[str, tuple[Image.Image, dict[str, Any]]] = field(default_factory=dict)  # file: (image, recipe)

    @property
    def headline(self) -> dict[str, Any]:
        """The summary and counts, as a command line prints them."""
        return {**self.summary, **self.counts}

    def save(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write the pictures (each PNG with its recipe), the tables and the plot into ``out_dir``;
        returns the tables' and the plot's paths by kind (md, csv, json, plot)."""
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for file_name, (picture, recipe) in self.pictures.items():
            save_png(picture, Path(out_dir) / file_name, recipe)
        files = write_tables(self.rows, out_dir, self.name, self.summary or None, self.notes)
        if self.curves is not None:
            files["plot"] = self.curves.draw(out_dir)
        return files


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
    wanted = (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(p for p in wanted if not p.name.lower().endswith(SKIPPED_SUFFIXES))


def match_file(folder: Path | None, name: str) -> Path | None:
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
        ref_path = match_file(ref_dir, path.name)
        reference = np.asarray(load_image(ref_path)) if ref_path else None
        if reference is not None and reference.shape != picture.shape:
            notes.append(
                f"{path.name}: reference {ref_path.name} is {reference.shape[1]}x{reference.shape[0]}, "
                f"the image {picture.shape[1]}x{picture.shape[0]}; reference metrics skipped"
            )
            reference = None
        if reference is not None:
            reference_pictures.append(reference)
            row.update(reference_metrics(picture, reference, _mask(mask_dir, path.name, picture), scorers))
        if caption is not None and (match := oracle_match(picture, caption)) is not None:
            row.update({f"oracle_{k}": v for k, v in match.items()})
        rows.append(row)
        outputs.append(picture)

    if scorers.clip is not None:  # one batched pass
        captioned = [k for k, row in enumerate(rows) if row["caption"] is not None]
        scores = scorers.clip.score([outputs[k] for k in captioned], [rows[k]["caption"] for k in captioned])
        for k, score in zip(captioned, scores, strict=True):
            rows[k]["clip_score"] = score
    summary = column_means(rows)
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
    path = match_file(folder, name)
    if path is None:
        return None
    mask = load_image(path, mode="L")
    if mask.size != (picture.shape[1], picture.shape[0]):
        raise RetouchError(
            f"the mask {path} is {mask.size[0]}x{mask.size[1]}, its image {picture.shape[1]}x{picture.shape[0]}"
        )
    return np.asarray(mask) > 127


def reference_metrics(
    picture: np.ndarray, reference: np.ndarray, mask: np.ndarray | None, scorers: Scorers
) -> dict[str, Any]:
    """Faithfulness of ``picture`` to ``reference``: PSNR and SSIM over the whole picture and, with
    a ``mask`` (True inside), inside and outside it; LPIPS when its network is loaded."""
    everywhere = np.ones(picture.shape[:2], dtype=bool)
    whole = masked_metrics(reference, picture, everywhere)["inside"]
    row: dict[str, Any] = {"psnr": whole["psnr"], "ssim": whole["ssim"]}
    if mask is not None:
        for part, values in masked_metrics(reference, picture, mask).items():
            row[f"psnr_{part}"], row[f"ssim_{part}"] = values["psnr"], values["ssim"]
    if scorers.lpips is not None:
        row["lpips"] = lpips_distance(scorers.lpips, reference, picture)
    return row


def column_means(rows: list[dict[str, Any]], prefix: str = "mean_") -> dict[str, float]:
    """Mean of each numeric column over its finite values (PSNR's inf = identical is left out)."""
    means = {}
    for key in dict.fromkeys(k for row in rows for k in row):
        values = [r[key] for r in rows if isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)]
        finite = [float(v) for v in values if math.isfinite(v)]
        if finite and not key.startswith("oracle_"):
            means[f"{prefix}{key}"] = float(np.mean(finite))
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
        notes.append(
            f"FID from {min(len(outputs), len(references))} pictures of {a.shape[1]}-d features "
            "is biased and noisy (use thousands); KID is unbiased"
        )
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


def evaluate_imagic_report(report_path: str | os.PathLike[str], scorers: Scorers) -> Evaluation:
    """An Imagic eta sweep (the report ``retouch imagic --eta auto`` writes) scored per eta, with a
    plot of each score against eta and the chosen eta marked."""
    try:
        report = json.loads(Path(report_path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RetouchError(f"cannot read the Imagic report {report_path}: {e}") from e
    if report.get("task") != "imagic" or not report.get("sweep"):
        raise RetouchError(f"{report_path} is not an Imagic report with a sweep (task 'imagic')")
    rows = imagic_sweep_scores(report, scorers)
    judge = str(report.get("judge")).split(" ")[0][:40]
    labels = [
        ("clip_score", "CLIP score (target)"),
        ("1-lpips", "1 - LPIPS (input)"),
        ("judge_score", f"judge score ({judge})"),
        ("psnr", "PSNR (input), dB"),
    ]
    curves = Curves(
        x=[row["eta"] for row in rows],
        series=sweep_series(rows, labels),
        file_name="imagic_eta.png",
        xlabel="eta",
        title=f"Imagic: {report.get('target')}",
        mark_x=report.get("eta"),
    )
    summary = {"eta_chosen": report.get("eta")}
    return Evaluation(rows, summary, list(scorers.notes), "imagic_sweep", {"etas": len(rows)}, curves)


def sweep_series(rows: list[dict[str, Any]], keys: Sequence[tuple[str, str]]) -> dict[str, list[float | None]]:
    """{label: column} for the columns of ``keys`` (column, label) that have any value."""
    series = {}
    for key, label in keys:
        values = [json_safe(r.get(key)) for r in rows]
        values = [float(v) if isinstance(v, int | float) else None for v in values]
        if any(v is not None for v in values):
            series[label] = values
    return series

