"""Imagic's result: the choice among stage C's samples, the recipe that replays it, the report
(stages, cache, sweep, metrics, timings) and the files ``ImagicResult.save`` writes."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from retouch.edit.imagic_region import LocalRegion
from retouch.edit.imagic_sample import Sampling, SweepSample
from retouch.edit.imagic_stages import ImagicRun
from retouch.edit.judge import RULE_ACCEPTED, best_kept
from retouch.edit.layer import mask_image
from retouch.errors import RetouchError
from retouch.io.atomic import atomic_write_json
from retouch.io.hashing import pixels_sha256
from retouch.io.png import save_png
from retouch.metrics.report import json_safe
from retouch.train.finetune import autocast_dtype


@dataclass
class ImagicResult:
    image: Image.Image  # RGB, the input's size
    report: dict[str, Any]  # stages (losses, cache), sweep, choice, metrics, timings
    recipe: dict[str, Any]  # task "imagic": replays this picture bit for bit
    sweep: list[SweepSample] = field(default_factory=list)  # every picture sampled, the chosen one included
    mask: Image.Image | None = None  # L, 255 = redrawn; None when the whole picture was sampled

    def sample_recipe(self, sample: SweepSample) -> dict[str, Any]:
        return {**self.recipe, "eta": sample.eta, "seed": sample.seed}

    def save(self, path: str | os.PathLike[str], sweep_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
        """Write ``PATH.png`` (with its recipe), ``PATH.mask.png`` (the region redrawn, when not the
        whole picture) and the report ``PATH.json`` atomically; with ``sweep_dir``, every sampled
        picture too, as ``eta{eta}_seed{seed}.png``, each replayable. The input is never overwritten."""
        targets = output_files(path, self.recipe.get("image"), mask=self.mask is not None)
        report = dict(self.report)
        if sweep_dir is not None:
            report["sweep"] = self._save_sweep(Path(sweep_dir))
            targets["sweep"] = Path(sweep_dir)
        save_png(self.image, targets["image"], self.recipe)
        if self.mask is not None:
            save_png(self.mask, targets["mask"], {**self.recipe, "output": "mask"})
        atomic_write_json(targets["report"], json_safe(report))
        return targets

    def summary(self, files: dict[str, str]) -> list[str]:
        """What the command line prints: the choice, each stage's loss, preservation, ``files``."""
        report = self.report
        lines = [
            f"eta {report['eta']} ({report['eta_mode']}), seed {report['seed']}, cache {report['cache']}",
            *(
                f"stage {name}: loss {stage['loss_before']:.4f} -> {stage['loss_after']:.4f}"
                + (" (cached)" if stage["cached"] else f" in {stage['seconds']:.1f}s")
                for name, stage in report["stages"].items()
            ),
            f"kept: PSNR {report['metrics']['psnr'] or float('inf'):.1f} dB, SSIM {report['metrics']['ssim']:.3f}; "
            f"{report['timings']['total_s']:.1f}s",
            *(f"note: {note}" for note in report["input"]["notes"]),
            *(f"wrote {path}" for path in files.values()),
        ]
        if report["eta_mode"] == "auto":
            lines.insert(1, f"judge {report['judge']}: {report['choice']['rule']}")
        return lines

    def _save_sweep(self, sweep_dir: Path) -> list[dict[str, Any]]:
        """Every sampled picture with its own recipe; the report's sweep rows with their files."""
        sweep_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for sample in self.sweep:
            file = sweep_dir / f"eta{sample.eta:.2f}_seed{sample.seed}.png"
            save_png(sample.image, file, self.sample_recipe(sample))
            rows.append({**sample.to_dict(), "file": str(file)})
        return rows


def output_files(
    path: str | os.PathLike[str], image: str | os.PathLike[str] | None = None, mask: bool = True
) -> dict[str, Path]:
    """The files ``ImagicResult.save`` writes for ``path``: the picture, its report and (``mask``)
    the region redrawn. Errors when ``path`` is not a .png (it carries the recipe) or one of them
    is the input ``image``, which is never overwritten; callers check before a long run."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise RetouchError(f"the output must be a .png file (it carries the recipe), got {path}")
    targets = {"image": path, "report": path.with_suffix(".json")}
    if mask:
        targets["mask"] = path.with_suffix(".mask.png")
    if image and Path(image).resolve() in {p.resolve() for p in targets.values()}:
        raise RetouchError(
            f"refusing to overwrite the input {image}; the input is never overwritten, choose another --output"
        )
    return targets


def choose(samples: list[SweepSample], auto: bool) -> tuple[SweepSample, dict[str, Any]]:
    """Auto: the best edit that keeps the input (``judge.best_kept``; keeping: preservation, then
    the smaller eta). Not auto: the one sample."""
    if not auto:
        return samples[0], {"eta": samples[0].eta, "seed": samples[0].seed, "rule": "given"}
    index, accepted = best_kept(
        [s.scores["judge_score"] for s in samples],
        [s.scores["accepted"] for s in samples],
        [(s.scores["preservation"], -s.eta) for s in samples],
    )
    chosen = samples[index]
    rule = RULE_ACCEPTED if accepted else "no eta accepted: highest judge score; ties: best preservation"
    return chosen, {"eta": chosen.eta, "seed": chosen.seed, "accepted": accepted, "rule": rule}


def cache_status(run: ImagicRun, stages: dict[str, dict[str, Any]]) -> str:
    """``off``, ``hit`` (A and B cached), ``partial`` or ``miss``."""
    if run.cache.root is None:
        return "off"
    hits = [stage["cached"] for stage in stages.values()]
    return "hit" if all(hits) else ("partial" if any(hits) else "miss")


def region_report(local: LocalRegion | None, asked: str, mask: np.ndarray | None) -> dict[str, Any]:
    """The region stage C redrew, why, and the share of the picture it covers."""
    if local is None or mask is None:
        return {"asked": asked, "region": "global", "mask_area": 1.0}
    return {
        "asked": asked,
        "region": local.decision.region,
        "confidence": local.decision.confidence,
        "evidence": local.decision.evidence,
        "mask_area": float(mask.mean()),
    }


def imagic_result(
    run: ImagicRun,
    samples: list[SweepSample],
    auto: bool,
    local: LocalRegion | None,
    asked_region: str,
    sampling: Sampling,
    stages: dict[str, dict[str, Any]],
    judge_name: str | None,
    lpips: bool,
) -> ImagicResult:
    """The report stage: choose among ``samples``, write the recipe that replays the choice and the
    report of the whole run (``lpips``: preservation was measured with LPIPS)."""
    chosen, choice = choose(samples, auto)
    recipe = imagic_recipe(run, chosen, local, sampling)
    run.timings["total_s"] = time.perf_counter() - run.started
    report = {
        **imagic_report(run, recipe, stages, chosen, choice),
        "region": region_report(local, asked_region, chosen.mask),
        "judge": judge_name,
        "preservation_metric": "1-lpips" if lpips else "psnr",
        "sweep": [s.to_dict() for s in samples],
        "choice": choice,
        "metrics": {k: chosen.scores[k] for k in ("psnr", "ssim", "lpips") if k in chosen.scores},
        "input": input_report(run),
        "timings": dict(run.timings),
    }
    mask = None if chosen.mask is None else mask_image(chosen.mask)
    return ImagicResult(chosen.image, report, recipe, samples, mask)


def imagic_recipe(run: ImagicRun, chosen: SweepSample, local: LocalRegion | None, sampling: Sampling) -> dict[str, Any]:
    """Everything that replays the chosen picture bit for bit (``task: imagic``)."""
    loaded = run.loaded
    height, width = run.pixels.shape[:2]
    return {
        "task": "imagic",
        "image": run.image_path,
        "image_sha256": pixels_sha256(run.pixels),
        "target": run.target,
        "prompt": run.target,  # for AUTOMATIC1111's parameters text; not read back
        "eta": chosen.eta,
        "seed": chosen.seed,
        "region": local.decision.region if local is not None else "global",
        **asdict(run.config),
        "steps": sampling.steps,
        "guidance_scale": sampling.guidance_scale,
        "scheduler": sampling.scheduler,
        "width": width,
        "height": height,
        **({"cache": run.recipe_cache} if run.recipe_cache is not None else {}),
        **loaded.recipe_fields(),
    }


def imagic_report(
    run: ImagicRun,
    recipe: dict[str, Any],
    stages: dict[str, dict[str, Any]],
    chosen: SweepSample,
    choice: dict[str, Any],
) -> dict[str, Any]:
    """The head of the report: what was chosen, the cache, the stages' settings and losses."""
    amp = autocast_dtype(run.pipe.device)
    return {
        "task": "imagic",
        "image": recipe["image"],
        "target": run.target,
        "eta": chosen.eta,
        "eta_mode": "fixed" if choice["rule"] == "given" else "auto",
        "seed": chosen.seed,
        "cache": cache_status(run, stages),
        "cache_dir": str(run.cache.root) if run.cache.root else None,
        "cache_keys": {"embed": run.embed_key, "tune": run.tune_key},
        "config": asdict(run.config),
        "training": {
            "device": str(run.pipe.device),
            "gradient_checkpointing": run.gradient_checkpointing,
            "mixed_precision": str(amp).removeprefix("torch.") if amp else None,
        },
        "stages": stages,
    }


def input_report(run: ImagicRun) -> dict[str, Any]:
    """The input as read: its size, mode, conversion notes and the size it was padded to."""
    height, width = run.pixels.shape[:2]
    return {
        "width": width,
        "height": height,
        "mode": run.source_input.mode,
        "notes": run.source_input.notes,
        "padded_to": [run.padded.shape[1], run.padded.shape[0]],
    }
