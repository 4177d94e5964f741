"""Benchmark automatic region editing (``retouch edit``) on the shapes-64 world.

    python benchmarks/bench_shapes_edit.py --n 300 --out outputs/bench_edit.json               # dev split
    python benchmarks/bench_shapes_edit.py --n 300 --split test --out outputs/bench_edit_test.json
    python benchmarks/bench_shapes_edit.py --n 3 --model /tmp/tiny     # plumbing check, tiny model

N random edit pairs (a third each: background colour, object colour, object shape), the source
rendered, the canonical captions given. For each method, on the same pictures, seeds and strength:
- region: the decided region equals the pair's (ours only; the others have no decision);
- success: the oracle reads every field of the target scene from the output; "in place" also asks
  that the object's bounding-box centre lies within 4 px of the target scene's (shapes_scoring.py);
- preservation: PSNR between input and output outside the ground-truth edit mask dilated by
  2 px (median and 10th percentile; "inf" = identical there);
- mask IoU with the ground-truth edit mask (median).
Methods: ``blend`` (ours: automatic mask + Blended Latent Diffusion), ``sdedit`` (plain img2img of
the whole picture), ``pixel-noise`` (the failed method of background doc 000: random latent noise
decoded to pixels, composited into the picture through our automatic mask in pixel space, then
img2img from there), ``diffedit`` (diffusers' StableDiffusionDiffEditPipeline, composited onto the
input through its own mask). Speed: one 64x64 ``blend`` edit (mask included) against a plain
img2img with the same steps and strength, median of repeats (target ratio <= 1.5).
Bars (bundled model): region >= 98%, success >= 85%, preservation median >= 40 dB and
p10 >= 30 dB, mask IoU median >= 0.80. Prints figures; never fails on them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from shapes_scoring import add_split_arguments, base_seed, centre_shift, in_place
from workers import map_in_workers, worker_model, worker_settings

from retouch.core.latents import decode
from retouch.core.schedulers import make_scheduler
from retouch.edit import DEFAULT_STEPS, DEFAULT_STRENGTH, edit
from retouch.edit.api import DEFAULT_SCHEDULER
from retouch.edit.masks import MaskConfig
from retouch.edit.sdedit import sdedit
from retouch.errors import RetouchError
from retouch.models.loading import LoadedModel, load_model
from retouch.worlds import shapes64

KINDS = ("background", "color", "shape")
METHODS = ("blend", "sdedit", "pixel-noise", "diffedit")
BARS = {"region": 0.98, "success": 0.85, "psnr_median": 40.0, "psnr_p10": 30.0, "iou_median": 0.80}


def pixel_noise_edit(
    model: LoadedModel,
    source: np.ndarray,
    mask: np.ndarray,
    target: str,
    strength: float,
    steps: int,
    seed: int,
) -> np.ndarray:
    """Background doc 000's method, for comparison only: decode random latents to pixels, paste
    them into the picture through ``mask``, and run img2img on the result."""
    pipe = model.pipe
    generator = torch.Generator("cpu").manual_seed(seed)
    h, w = source.shape[0] // pipe.vae_scale_factor, source.shape[1] // pipe.vae_scale_factor
    noise = torch.randn((1, 4, h, w), generator=generator).to(pipe.device, pipe.unet.dtype)
    noise_pixels = decode(pipe, noise)  # what random latents look like as a picture
    composite = np.where(mask[..., None], noise_pixels, source)
    scheduler = make_scheduler(DEFAULT_SCHEDULER, pipe.scheduler.config)
    return sdedit(pipe, composite, target, scheduler, strength, steps, model.guidance_scale(), generator)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def preservation_psnr(source: np.ndarray, output: np.ndarray, truth: np.ndarray) -> float:
    keep = ~ndimage.binary_dilation(truth, iterations=2)
    mse = float(np.mean((source[keep].astype(np.float64) - output[keep]) ** 2)) if keep.any() else 0.0
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: well defined with ``inf`` values (identical pictures)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q, method="nearest")) if values else math.nan


def by_kind(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    kinds = [kind for kind in KINDS if any(r["kind"] == kind for r in rows)]
    return {kind: float(np.mean([r.get(key, False) for r in rows if r["kind"] == kind])) for kind in kinds}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rows if r.get("error") is None]
    psnr = [r["psnr"] for r in done]
    ious = [r["iou"] for r in done if r.get("iou") is not None]
    regions = [r["region_ok"] for r in rows if "region_ok" in r]
    return {
        "n": len(rows),
        "errors": len(rows) - len(done),
        "region": float(np.mean(regions)) if regions else None,
        "success": float(np.mean([r.get("success", False) for r in rows])) if rows else math.nan,
        "success_by_kind": by_kind(rows, "success"),
        "success_in_place": float(np.mean([r["success_in_place"] for r in rows])) if rows else math.nan,
        "success_in_place_by_kind": by_kind(rows, "success_in_place"),
        "psnr_median": percentile(psnr, 50),
        "psnr_p10": percentile(psnr, 10),
        "iou_median": percentile(ious, 50) if ious else None,
    }


def run_pair(item: tuple[shapes64.EditPair, str, int]) -> dict[str, dict[str, Any]]:
    """Every method on one pair, in a worker (see ``workers.py``)."""
    pair, kind, seed = item
    model, args = worker_model(), worker_settings()
    source = pair.source.render()
    options = {"seed": seed, "steps": args.steps, "strength": args.strength, "guidance_scale": args.guidance_scale,
               "mask_config": MaskConfig(num_draws=args.mask_draws) if args.mask_draws else None}
    rows: dict[str, dict[str, Any]] = {}
    ours_mask = None
    for method in args.methods:
        row: dict[str, Any] = {"kind": kind, "error": None}
        try:
            if method == "pixel-noise":
                if ours_mask is None:
                    raise RetouchError("needs the automatic mask of 'blend', which failed")
                output, mask = (
                    pixel_noise_edit(model, source, ours_mask, pair.target_caption, args.strength, args.steps, seed),
                    ours_mask,
                )
            else:
                tries = (args.tries or "auto") if method == "blend" else 1
                result = edit(model, source, pair.source_caption, pair.target_caption, method=method, tries=tries,
                              **options)  # fmt: skip
                output, mask = np.asarray(result.image), np.asarray(result.mask) == 255
                row["tries_used"] = len(result.report["tries"] or [None])
                if method == "blend":
                    ours_mask = mask
                    row["region_ok"] = result.report["region"] == pair.region
            reading = shapes64.read_scene(output)
            success = all(reading.matches(pair.target).values())
            row |= {
                "success": success,
                "success_in_place": success and in_place(output, pair.target),
                "centre_shift": centre_shift(output, pair.target),
                "psnr": preservation_psnr(source, output, pair.mask),
                "iou": iou(mask, pair.mask),
            }
        except RetouchError as e:  # e.g. an undecidable region: counted as a miss
            row |= {"error": str(e), "success": False, "success_in_place": False}
            if method == "blend":
                row["region_ok"] = False
        rows[method] = row
    return rows


def dump_worst(items: list[tuple[shapes64.EditPair, str, int]], rows: list[dict[str, Any]],
               args: argparse.Namespace) -> None:
    """Re-run blend on the ``--dump-worst`` pairs with the lowest PSNR outside the true region and
    write one sheet each: input | output | mask | layer on grey | |output - input| x4 | true region."""
    model = load_model(args.model, args.device)
    order = sorted(range(len(rows)), key=lambda i: rows[i].get("psnr", -math.inf))[: args.dump_worst]
    folder = (args.out.parent if args.out else Path("outputs")) / "edit_worst"
    folder.mkdir(parents=True, exist_ok=True)
    for i in order:
        pair, kind, seed = items[i]
        source = pair.source.render()
        result = edit(model, source, pair.source_caption, pair.target_caption, seed=seed, steps=args.steps,
                      strength=args.strength)
        output = np.asarray(result.image)
        layer = np.asarray(result.layer).astype(np.float64)
        on_grey = (layer[..., :3] * layer[..., 3:] / 255 + 128 * (1 - layer[..., 3:] / 255)).astype(np.uint8)
        diff = np.clip(np.abs(output.astype(np.int16) - source) * 4, 0, 255).astype(np.uint8)
        as_rgb = [np.stack([np.asarray(m, dtype=np.uint8) * (255 if m.dtype == bool else 1)] * 3, -1)
                  for m in (np.asarray(result.mask), pair.mask)]
        sheet = np.concatenate([source, output, as_rgb[0], on_grey, diff, as_rgb[1]], axis=1)
        name = f"{i:03d}-{kind}-psnr{rows[i].get('psnr', float('nan')):.1f}.png"
        Image.fromarray(sheet).resize((sheet.shape[1] * 3, sheet.shape[0] * 3), Image.NEAREST).save(folder / name)
        print(f"worst {i}: {pair.source_caption!r} -> {pair.target_caption!r}, {folder / name}")


def measure_speed(model: LoadedModel, args: argparse.Namespace, repeats: int = 2) -> dict[str, float]:
    """Wall time of ``blend`` at the benchmark's settings (its retries included) against a plain
    img2img (``sdedit``, one draw), summed over 6 pairs (2 of each kind), median of repeats."""
    rng = np.random.default_rng(args.seed)
    pairs = [shapes64.sample_edit(rng, KINDS[i % len(KINDS)]) for i in range(6)]
    totals: dict[str, list[float]] = {"blend": [], "sdedit": []}
    for i in range(repeats + 1):  # the first round warms up
        for method in totals:
            start = time.perf_counter()
            for k, pair in enumerate(pairs):
                edit(model, pair.source.render(), pair.source_caption, pair.target_caption, method=method,
                     seed=args.seed + k, steps=args.steps, strength=args.strength,
                     tries=(args.tries or "auto") if method == "blend" else 1)  # fmt: skip
            if i:
                totals[method].append(time.perf_counter() - start)
    blend, img2img = statistics.median(totals["blend"]) / 6, statistics.median(totals["sdedit"]) / 6
    return {"blend_s": blend, "img2img_s": img2img, "ratio": blend / img2img}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="edit pairs (a third of each kind)")
    parser.add_argument("--model", default="shapes-64")
    parser.add_argument("--device", default=None)
    add_split_arguments(parser)  # the split's base seed seeds the pairs; pair i edits with seed + i
    parser.add_argument("--strength", type=float, default=DEFAULT_STRENGTH)
    parser.add_argument("--tries", type=int, default=None,
                        help="blend: seeds tried while the oracle rejects the edit (default: edit's own, auto)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--mask-draws", type=int, default=None, help="noise draws of the difference map")
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: the model's edit default")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--workers", type=int, default=1, help="processes, one thread each (speed: always 1)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="which methods to run (pixel-noise needs blend before it)")
    parser.add_argument("--dump-worst", type=int, default=0, metavar="K",
                        help="write contact sheets of blend's K worst edits by PSNR outside the true region")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    args = parser.parse_args()
    args.seed = base_seed(args, "edit")

    rng = np.random.default_rng(args.seed)
    items = [(shapes64.sample_edit(rng, KINDS[i % len(KINDS)]), KINDS[i % len(KINDS)], args.seed + i)
             for i in range(args.n)]  # fmt: skip
    start = time.perf_counter()
    results = map_in_workers(run_pair, items, args.workers, args.model, args.device, args)
    rows: dict[str, list[dict[str, Any]]] = {method: [row[method] for row in results] for method in args.methods}
    figures: dict[str, Any] = {method: summarize(method_rows) for method, method_rows in rows.items()}
    if not args.no_speed:
        figures["speed"] = measure_speed(load_model(args.model, args.device), args)
    figures["settings"] = {**vars(args), "out": str(args.out), "seconds": time.perf_counter() - start}
    figures["bars"] = BARS
    figures["rows"] = rows

    print(f"{args.n} pairs ({args.split} split, seed {args.seed}), model {args.model}, strength {args.strength}, "
          f"{args.steps} steps")
    print(f"{'method':12} {'region':>7} {'success':>8} {'in place':>9} {'psnr med':>9} {'psnr p10':>9} {'iou med':>8} "
          "errors")
    for method in args.methods:
        f = figures[method]
        region = "-" if f["region"] is None else f"{f['region']:.1%}"
        iou_text = "-" if f["iou_median"] is None else f"{f['iou_median']:.3f}"
        print(
            f"{method:12} {region:>7} {f['success']:>8.1%} {f['success_in_place']:>9.1%} "
            f"{f['psnr_median']:>9.2f} {f['psnr_p10']:>9.2f} "
            f"{iou_text:>8} {f['errors']}"
        )
    if "speed" in figures:
        speed = figures["speed"]
        print(f"speed: blend {speed['blend_s']:.3f}s vs img2img {speed['img2img_s']:.3f}s, "
              f"ratio {speed['ratio']:.2f} (target <= 1.5)")
    if args.dump_worst and "blend" in args.methods:
        dump_worst(items, rows["blend"], args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2, default=str) + "\n")  # inf -> Infinity


if __name__ == "__main__":
    main()
