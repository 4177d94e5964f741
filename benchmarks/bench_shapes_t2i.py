"""Benchmark the bundled shapes-64 model: text-to-image accuracy, VAE reconstruction and speed.

    python benchmarks/bench_shapes_t2i.py --n 300 --out outputs/bench_t2i.json

Text-to-image: N random canonical captions, fresh seeds, the oracle reads back each field
(bars: all five >= 85%, each >= 95%). VAE: mean PSNR of decode(encode(x)) over 1,000 random
scenes (bar >= 32 dB). Speed: 64x64, 25 steps, batch 8, seconds per image (bar <= 0.25 s).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from retouch.core.schedulers import make_scheduler
from retouch.models.loading import load_model
from retouch.train.ldm import vae_psnr
from retouch.worlds import shapes64
from retouch.worlds.shapes64_data import Shapes64Source


def sample_batch(pipe, captions: list[str], seeds: list[int], steps: int, guidance: float) -> list[np.ndarray]:
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    out = pipe(captions, num_inference_steps=steps, guidance_scale=guidance, generator=generators,
               output_type="np").images
    return [np.round(img * 255).astype(np.uint8) for img in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes-64")
    parser.add_argument("--n", type=int, default=300, help="captions for the accuracy test")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: the model card's")
    parser.add_argument("--scheduler", default=None, help="default: the model's own")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vae-n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--save-grid", type=Path, default=None, help="save the first 32 images as one PNG")
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    loaded = load_model(args.model)
    pipe = loaded.pipe
    pipe.set_progress_bar_config(disable=True)
    defaults = json.loads((Path(pipe.config._name_or_path) / "retouch.json").read_text()) \
        if (Path(pipe.config._name_or_path) / "retouch.json").exists() else {}
    guidance = args.guidance_scale or defaults.get("guidance_scale", 7.5)
    scheduler = args.scheduler or defaults.get("scheduler")
    if scheduler:
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)

    rng = np.random.default_rng(args.seed)
    scenes = [shapes64.sample_scene(rng) for _ in range(args.n)]
    images: list[np.ndarray] = []
    start = time.perf_counter()
    for i in range(0, args.n, args.batch):
        chunk = scenes[i : i + args.batch]
        seeds = [args.seed * 100_000 + i + k for k in range(len(chunk))]
        images += sample_batch(pipe, [s.caption() for s in chunk], seeds, args.steps, guidance)
    gen_seconds = (time.perf_counter() - start) / args.n
    accuracy = shapes64.oracle_accuracy(images, scenes)

    # speed: batch of 8 at 25 steps, best of three after one warm-up
    captions = [s.caption() for s in scenes[:8]]
    sample_batch(pipe, captions, list(range(8)), 25, guidance)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        sample_batch(pipe, captions, list(range(8)), 25, guidance)
        times.append((time.perf_counter() - t) / 8)

    psnr = vae_psnr(pipe.vae, Shapes64Source(), n=args.vae_n)
    figures = {
        "model": loaded.name,
        "n": args.n,
        "steps": args.steps,
        "guidance_scale": guidance,
        "scheduler": scheduler or type(pipe.scheduler).__name__,
        "accuracy": accuracy,
        "vae_psnr_db": psnr,
        "seconds_per_image_batch8_25steps": min(times),
        "seconds_per_image_in_accuracy_run": gen_seconds,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(figures, indent=2))
    bars = {
        "all fields >= 0.85": accuracy["all"] >= 0.85,
        "each field >= 0.95": all(accuracy[k] >= 0.95 for k in ("shape", "color", "background", "size", "style")),
        "VAE PSNR >= 32 dB": psnr >= 32,
        "<= 0.25 s/image": min(times) <= 0.25,
    }
    for name, ok in bars.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**figures, "bars": bars}, indent=2))
    if args.save_grid:
        from PIL import Image

        rows = [np.concatenate(images[r * 8 : r * 8 + 8], axis=1) for r in range(min(4, len(images) // 8))]
        Image.fromarray(np.concatenate(rows, axis=0)).save(args.save_grid)


if __name__ == "__main__":
    main()
