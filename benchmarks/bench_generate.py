"""retouch's generate() against diffusers' own StableDiffusionPipeline.__call__, side by side.

    python benchmarks/bench_generate.py               # both cases
    python benchmarks/bench_generate.py --case tiny   # (a) tiny random model, 25 steps, 64x64
    python benchmarks/bench_generate.py --case sd15   # (b) SD-1.5 architecture, random weights,
                                                      #     256x256, 4 steps

Same weights, prompt, seed and scheduler on both sides. Each repeat runs both calls, the order
alternating between repeats, after one untimed warm-up call each. Prints whether the pixels are
identical and the wall-time ratio retouch / diffusers (target <= 1.03). Never fails on time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from retouch.core.generate import generate
from retouch.core.schedulers import make_scheduler
from retouch.models.random_sd15 import sd15_pipeline
from retouch.models.tiny import tiny_pipeline

PROMPT = "a large red circle on a blue background"


def timed(fn: Callable[[], Image.Image]) -> tuple[float, float, Image.Image]:
    """(wall seconds, process CPU seconds, image). CPU time barely moves when other jobs share
    the machine, so it is the steadier figure there (exact with --threads 1)."""
    wall, cpu = time.perf_counter(), time.process_time()
    image = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, image


def compare(name: str, pipe: StableDiffusionPipeline, steps: int, size: int, scheduler: str, repeats: int) -> None:
    pipe.set_progress_bar_config(disable=True)
    seed = 1234

    def ours() -> Image.Image:
        result = generate(pipe, PROMPT, seed=seed, steps=steps, scheduler=scheduler, width=size, height=size)
        return result.images[0]

    def theirs() -> Image.Image:
        return pipe(
            PROMPT,
            num_inference_steps=steps,
            width=size,
            height=size,
            generator=torch.Generator("cpu").manual_seed(seed),
        ).images[0]

    own_scheduler = pipe.scheduler
    pipe.scheduler = make_scheduler(scheduler, own_scheduler.config)  # diffusers' side: set once
    try:
        ours(), theirs()  # warm-up
        wall: dict[str, list[float]] = {"retouch": [], "diffusers": []}
        cpu: dict[str, list[float]] = {"retouch": [], "diffusers": []}
        identical = True
        for repeat in range(repeats):
            calls = [("retouch", ours), ("diffusers", theirs)]
            images = {}
            for label, fn in calls if repeat % 2 == 0 else calls[::-1]:
                wall_s, cpu_s, images[label] = timed(fn)
                wall[label].append(wall_s)
                cpu[label].append(cpu_s)
            identical &= np.array_equal(np.asarray(images["retouch"]), np.asarray(images["diffusers"]))
    finally:
        pipe.scheduler = own_scheduler

    print(f"\n== {name}: {steps} steps, {size}x{size}, scheduler {scheduler}, {repeats} repeats ==")
    for kind, times in (("wall", wall), ("cpu", cpu)):
        for label, values in times.items():
            runs = [round(v, 3) for v in values]
            print(f"  {kind:4} {label:9} median {statistics.median(values):8.3f} s  min {min(values):8.3f} s  {runs}")
        median_ratio = statistics.median(times["retouch"]) / statistics.median(times["diffusers"])
        min_ratio = min(times["retouch"]) / min(times["diffusers"])
        print(f"  {kind:4} ratio retouch/diffusers: medians {median_ratio:.3f}, minima {min_ratio:.3f}")
    print(f"  identical pixels: {identical}   (target ratio <= 1.03)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=("tiny", "sd15", "both"), default="both")
    parser.add_argument("--scheduler", default="euler-a")
    parser.add_argument("--tiny-repeats", type=int, default=10)
    parser.add_argument("--sd15-repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.case in ("tiny", "both"):
        compare("tiny", tiny_pipeline(sample_size=32), 25, 64, args.scheduler, args.tiny_repeats)
    if args.case in ("sd15", "both"):
        start = time.perf_counter()
        pipe = sd15_pipeline()
        parameters = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
        print(f"\nbuilt SD-1.5-architecture pipeline in {time.perf_counter() - start:.0f} s "
              f"(UNet {parameters:.0f}M parameters)")  # fmt: skip
        compare("sd15", pipe, 4, 256, args.scheduler, args.sd15_repeats)


if __name__ == "__main__":
    main()
