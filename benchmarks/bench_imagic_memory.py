"""Peak memory of Imagic's stages A (embedding) and B (LoRA tuning) on Stable Diffusion 1.5's
architecture with random weights (UNet 860M parameters, CLIP ViT-L/14 text encoder, SD VAE).

    python benchmarks/bench_imagic_memory.py --size 256 --steps 2      # CPU: peak RSS of the process
    python benchmarks/bench_imagic_memory.py --size 512 --steps 4      # CUDA: torch max allocated

Both stages run as ``retouch imagic --tune lora`` runs them: gradient checkpointing, weights in
float32, on CUDA bfloat16/float16 autocast and 8-bit Adam when bitsandbytes is installed. On CPU the
figure is ``ru_maxrss``, the process's peak resident memory so far: each stage's figure includes
the model (and everything before it). On CUDA each stage's peak is measured on its own. The target
is <= 16 GB at 512 x 512 on a GPU. Prints figures; never fails on them.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from retouch.core.latents import encode, text_embeddings
from retouch.edit.imagic_stages import ImagicConfig, imagic_unet, optimize_embedding, tune_unet
from retouch.models.random_sd15 import sd15_pipeline
from retouch.train.finetune import training_scheduler

GB = 1024**3


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=None, help="picture side (default: 512 on CUDA, 256 on CPU)")
    parser.add_argument("--steps", type=int, default=2, help="steps of each stage")
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-checkpointing", action="store_true", help="gradient checkpointing off")
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = args.size or (512 if device.type == "cuda" else 256)
    checkpointing = not args.no_checkpointing
    print(f"torch {torch.__version__}, device {device}, {size}x{size}, {args.steps} steps per stage, "
          f"gradient checkpointing {'on' if checkpointing else 'off'}")  # fmt: skip

    start = time.perf_counter()
    pipe = sd15_pipeline().to(device)
    figures = {"model loaded": peak_bytes(device)}
    print(f"built the SD-1.5-architecture pipeline in {time.perf_counter() - start:.0f}s")
    pixels = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
    latents = encode(pipe, pixels)  # (1, 4, size/8, size/8)
    target_embeds, _ = text_embeddings(pipe, "a photo of a cat wearing a hat", 1.0)  # (1, 77, 768)
    noise_scheduler = training_scheduler(pipe)
    config = ImagicConfig(tune="lora", embed_steps=args.steps, tune_steps=args.steps, lora_rank=4, batch_size=1)
    figures["encoded"] = peak_bytes(device)

    reset_peak(device)
    start = time.perf_counter()
    optimized, losses_a = optimize_embedding(
        pipe.unet, noise_scheduler, latents, target_embeds.float(), config, gradient_checkpointing=checkpointing
    )
    figures["stage A (embedding)"] = peak_bytes(device)
    seconds_a = time.perf_counter() - start

    reset_peak(device)
    start = time.perf_counter()
    with imagic_unet(pipe, config) as unet:
        losses_b, optimizer = tune_unet(
            unet, noise_scheduler, latents, optimized, config, gradient_checkpointing=checkpointing
        )
    figures["stage B (LoRA tuning)"] = peak_bytes(device)
    seconds_b = time.perf_counter() - start

    what = "max allocated" if device.type == "cuda" else "peak RSS (cumulative)"
    print(f"\n| point | {what} |\n|---|---|")
    for name, value in figures.items():
        print(f"| {name} | {value / GB:.2f} GB |")
    print(f"\nstage A {seconds_a:.1f}s ({seconds_a / max(args.steps, 1):.1f}s/step), losses {losses_a}")
    print(f"stage B {seconds_b:.1f}s ({seconds_b / max(args.steps, 1):.1f}s/step), optimizer {optimizer}, "
          f"losses {losses_b}")  # fmt: skip
    if device.type == "cuda":
        print(f"target <= 16 GB at 512x512: peak {max(figures.values()) / GB:.2f} GB")


if __name__ == "__main__":
    main()
