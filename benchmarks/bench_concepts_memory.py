"""Peak memory of each personalization method on Stable Diffusion 1.5's architecture with random
weights (UNet ~860M parameters, CLIP ViT-L/14 text encoder, SD VAE) at 512x512.

    python benchmarks/bench_concepts_memory.py                     # every method, 512x512, 2 steps
    python benchmarks/bench_concepts_memory.py --methods dreambooth --gradient-checkpointing

Each method runs in its own process (``--one NAME``), as ``retouch train METHOD`` would: the model
loaded from a saved diffusers folder, 3 pictures, batch 1, 2 steps, no class images, weights in
float32, then the concept saved. On CPU the figure is the process's peak resident memory
(``ru_maxrss``: the model, the optimizer state and the largest step together); on CUDA, torch's max
allocated. Prints a Markdown table; never fails on the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_imagic_memory import GB, peak_bytes  # CUDA max allocated, else the process's peak RSS
from PIL import Image

from retouch.models.loading import load_model
from retouch.models.random_sd15 import sd15_pipeline
from retouch.train.concept import ConceptSettings
from retouch.train.personalize import personalize

CASES = {  # name -> (method, options), as `retouch train` runs them by default
    "textual-inversion": ("textual-inversion", {}),
    "lora": ("lora", {}),
    "dreambooth": ("dreambooth", {}),
    "dreambooth --lora": ("dreambooth", {"lora": True}),
    "custom-diffusion": ("custom-diffusion", {}),
}


def one(name: str, work: Path, device: str, steps: int, checkpointing: bool) -> dict[str, float]:
    """Train case ``name`` on the model saved in ``work``; its peak memory and times."""
    method, options = CASES[name]
    model = load_model(str(work / "model"), device=device)
    loaded = peak_bytes(model.pipe.device)
    settings = ConceptSettings(steps=steps, batch_size=1, gradient_checkpointing=checkpointing)
    start = time.perf_counter()
    result = personalize(model, method, [work / "pictures"], ["<star>"], work / name.replace(" ", ""),
                         class_words=["cross"], settings=settings, **options)
    return {"loaded_gb": loaded / GB, "peak_gb": peak_bytes(model.pipe.device) / GB,
            "seconds": time.perf_counter() - start, "seconds_per_step": result.manifest["figures"]["seconds_per_step"]}


def prepare(work: Path, size: int) -> None:
    """The random SD-1.5 model saved at ``size`` and 3 random pictures of that size."""
    sd15_pipeline(sample_size=size // 8).save_pretrained(work / "model", safe_serialization=True)
    (work / "pictures").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(work / "pictures" / f"{i}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--gradient-checkpointing", action="store_true", help="as retouch train's flag")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case in this process
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.one:
        print(json.dumps(one(args.one, args.work, device, args.steps, args.gradient_checkpointing)))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-concepts-memory-"))
    start = time.perf_counter()
    prepare(work, args.size)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {args.size}x{args.size}, "
          f"{args.steps} steps, batch 1, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}; "
          f"model saved in {time.perf_counter() - start:.0f} s ({work})", flush=True)
    what = "max allocated" if device == "cuda" else "peak RSS"
    print(f"\n| method | model loaded | {what}, training | seconds (per step) |\n|---|---|---|---|", flush=True)
    for name in args.methods:
        command = [sys.executable, __file__, "--one", name, "--work", str(work), "--device", device,
                   "--size", str(args.size), "--steps", str(args.steps)]
        command += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            print(f"| {name} | failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]} | | |")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {name} | {row['loaded_gb']:.2f} GB | **{row['peak_gb']:.2f} GB** | "
              f"{row['seconds']:.0f} ({row['seconds_per_step']:.1f}) |", flush=True)
    shutil.rmtree(work)  # the model and a DreamBooth copy: about 9 GB at float32


if __name__ == "__main__":
    main()
