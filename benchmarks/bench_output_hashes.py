"""Hashes of a fixed set of outputs on the bundled model, to show that a refactor changed none.

    python benchmarks/bench_output_hashes.py --out outputs/hashes-after.json
    python benchmarks/bench_output_hashes.py --out outputs/hashes-after.json --compare docs/output_hashes.json

Runs, one CPU thread, seeded: 14 edits (blend with every region, decided and forced; sdedit;
inpaint with a given mask; diffedit; strength auto), 2 Imagic edits (stage A only with the
region mask; stage A and a 2-step LoRA stage B on the whole picture), one held interpolation,
one style sweep, 3 generations and one tiny ``train model`` run. Each output's pixels (or the
trained tensors) are hashed with SHA-256; ``--compare`` prints which hashes differ from a stored
run and exits 1 when any does. Only the public API and CLI are called, so the script runs
unchanged before and after a refactor.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

import retouch
from retouch.cli import main as cli_main
from retouch.edit import edit
from retouch.worlds import shapes64

TINY_RECIPE = {
    "vae_channels": [8, 8, 8], "vae_steps": 4, "vae_batch_size": 4, "vae_crop": 16, "num_latents": 64,
    "decoder_steps": 2, "decoder_batch_size": 2, "text_hidden": 16, "text_layers": 1, "text_heads": 2,
    "unet_channels": [8, 16, 16], "unet_heads": 2, "unet_steps": 6, "unet_batch_size": 4,
    "checkpoint_every": 2, "warmup_steps": 2, "unet_text_time_embedding": True, "min_snr_gamma": 5.0,
    "foreground_loss_share": 0.5,
}


def pixels_hash(image: Image.Image | np.ndarray) -> str:
    array = np.asarray(image)
    return hashlib.sha256(str(array.shape).encode() + array.tobytes()).hexdigest()[:16]


def scene(background: str, color: str, shape: str, size: str, x0: int, y0: int, style: str = "plain") -> np.ndarray:
    return shapes64.Scene(background, color, shape, size, x0, y0, style).render()


def edit_cases() -> list[tuple[str, np.ndarray, str, str, dict[str, Any]]]:
    a = scene("blue", "red", "circle", "large", 14, 10)
    b = scene("white", "green", "square", "small", 30, 8)
    c = scene("purple", "yellow", "triangle", "small", 6, 36, "pastel")
    cap = shapes64.caption
    a_src, b_src, c_src = cap("large", "red", "circle", "blue"), cap("small", "green", "square", "white"), \
        cap("small", "yellow", "triangle", "purple", "pastel")
    mask = np.zeros((64, 64), np.uint8)
    mask[10:46, 14:50] = 255
    return [
        ("blend-background-a", a, a_src, cap("large", "red", "circle", "green"), {}),
        ("blend-color-a", a, a_src, cap("large", "yellow", "circle", "blue"), {}),
        ("blend-shape-a", a, a_src, cap("large", "red", "square", "blue"), {}),
        ("blend-background-b", b, b_src, cap("small", "green", "square", "orange"), {}),
        ("blend-color-c", c, c_src, cap("small", "pink", "triangle", "purple", "pastel"), {}),
        ("blend-shape-c", c, c_src, cap("small", "yellow", "cross", "purple", "pastel"), {}),
        ("blend-global-a", a, a_src, a_src + ", pastel", {}),
        ("blend-force-foreground-b", b, b_src, cap("small", "blue", "square", "white"), {"region": "foreground"}),
        ("blend-force-background-b", b, b_src, cap("small", "green", "square", "black"), {"region": "background"}),
        ("blend-force-global-a", a, a_src, cap("large", "red", "circle", "pink"), {"region": "global"}),
        ("sdedit-a", a, a_src, cap("large", "red", "circle", "green"), {"method": "sdedit", "strength": 0.6}),
        ("inpaint-a", a, a_src, cap("large", "blue", "circle", "blue"), {"method": "inpaint", "mask": mask}),
        ("diffedit-b", b, b_src, cap("small", "red", "square", "white"), {"method": "diffedit"}),
        ("strength-auto-c", c, c_src, cap("small", "yellow", "triangle", "green", "pastel"), {"strength": "auto"}),
    ]


def run_edits(model: retouch.LoadedModel, hashes: dict[str, str]) -> None:
    for name, image, source, target, options in edit_cases():
        result = edit(model, image, source, target, seed=7, steps=10, **options)
        hashes[f"edit/{name}"] = pixels_hash(result.image)
        hashes[f"edit/{name}.mask"] = pixels_hash(result.mask)
        hashes[f"edit/{name}.layer"] = pixels_hash(result.layer)


def run_imagic(model: retouch.LoadedModel, hashes: dict[str, str], cache: Path) -> None:
    image = scene("purple", "orange", "square", "large", 12, 14)
    target = shapes64.caption("large", "red", "square", "purple")
    result = retouch.imagic(model, image, target, eta=0.8, seed=3, embed_steps=20, steps=10,
                            cache_dir=cache / "a")
    hashes["imagic/region-auto"] = pixels_hash(result.image)
    result = retouch.imagic(model, image, shapes64.caption("large", "orange", "square", "green"), eta=1.0, seed=4,
                            region="global", embed_steps=10, tune_steps=2, steps=10, cache_dir=cache / "b")
    hashes["imagic/global-lora"] = pixels_hash(result.image)


def run_steer(model: retouch.LoadedModel, hashes: dict[str, str]) -> None:
    result = retouch.interpolate(model, "a small red circle on a blue background",
                                 "a small red circle on a green background", 5, seed=3, steps=10, hold_common=1.0)
    for i, frame in enumerate(result.images):
        hashes[f"interpolate/held-frame{i}"] = pixels_hash(frame)
    sweep = retouch.style_sweep(model, "a large red circle on a blue background, pastel", "pastel", "-0.5:1:4", seed=5,
                                steps=10)
    for i, image in enumerate(sweep.images):
        hashes[f"style/{i}"] = pixels_hash(image)


def run_generate(model: retouch.LoadedModel, hashes: dict[str, str]) -> None:
    for i, (prompt, scheduler) in enumerate([
        ("a large red circle on a blue background", "euler"),
        ("a small (yellow:1.3) triangle on a purple background, pastel", "dpm++"),
        ("a large green square on a white background", "ddim"),
    ]):
        result = retouch.generate(model, prompt, seed=11 + i, steps=10, scheduler=scheduler)
        hashes[f"generate/{i}-{scheduler}"] = pixels_hash(result.images[0])


def run_train(hashes: dict[str, str], tmp: Path) -> None:
    recipe = tmp / "tiny.json"
    recipe.write_text(json.dumps(TINY_RECIPE))
    out = tmp / "model"
    if cli_main(["--quiet", "train", "model", "--recipe", str(recipe), "--output", str(out)]) != 0:
        raise SystemExit("train model failed")
    for part in ("unet", "vae", "text_encoder"):
        files = sorted((out / part).glob("*.safetensors"))
        digest = hashlib.sha256()
        for file in files:
            tensors = load_file(file)
            for key in sorted(tensors):
                digest.update(key.encode() + tensors[key].contiguous().numpy().tobytes())
        hashes[f"train/{part}"] = digest.hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where to write the hashes (JSON)")
    parser.add_argument("--compare", type=Path, help="a stored run: print the differences, exit 1 on any")
    parser.add_argument("--model", default="shapes-64")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    hashes: dict[str, str] = {}
    model = retouch.load_model(args.model, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        run_generate(model, hashes)
        run_edits(model, hashes)
        run_steer(model, hashes)
        run_imagic(model, hashes, Path(tmp))
        run_train(hashes, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(hashes, indent=1) + "\n")
    print(f"{len(hashes)} hashes in {time.perf_counter() - started:.0f} s -> {args.out}")
    if args.compare is None:
        return 0
    stored = json.loads(args.compare.read_text())
    differ = sorted(key for key in stored.keys() | hashes.keys() if stored.get(key) != hashes.get(key))
    for key in differ:
        print(f"DIFFERS {key}: stored {stored.get(key)} now {hashes.get(key)}")
    print(f"{len(stored) - len(differ)} of {len(stored)} stored hashes identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
