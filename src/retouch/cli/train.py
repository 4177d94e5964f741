"""``retouch train model``: train a latent diffusion model from scratch."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from retouch.cli.common import add_global_flags, emit
from retouch.errors import RetouchError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help="train models from scratch", description=__doc__)
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    model = kinds.add_parser(
        "model",
        help="a latent diffusion model: tokenizer, VAE, text encoder, UNet",
        description="Train a small latent diffusion model (word-level CLIP tokenizer, AutoencoderKL f=4, "
        "CLIP text encoder, UNet2DConditionModel) from scratch and write a diffusers folder. Runs on one "
        "process or many with `accelerate launch -m retouch train model ...`.",
    )
    model.add_argument("--recipe", help="JSON recipe (fields of retouch.train.LDMConfig); default: built-in")
    model.add_argument("--output", required=True, help="output folder (diffusers format)")
    model.add_argument("--resume", action="store_true", help="continue a run in --output from its checkpoint")
    model.add_argument("--data", choices=("shapes64", "imagefolder", "fashion-mnist"), help="data source")
    model.add_argument("--data-dir", help="image folder with metadata.jsonl, or the Fashion-MNIST .gz files")
    model.add_argument("--resolution", type=int, help="picture side in pixels")
    model.add_argument("--vae-steps", type=int)
    model.add_argument("--unet-steps", type=int)
    model.add_argument("--checkpoint-every", type=int, help="checkpoint every N steps (default 200)")
    model.add_argument("--num-latents", type=int, help="how many pictures to pre-encode")
    add_global_flags(model)
    model.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from retouch.train.ldm import LDMConfig, train_ldm_model

    try:
        config = LDMConfig.from_json(args.recipe) if args.recipe else LDMConfig()
    except (OSError, ValueError, TypeError) as err:
        raise RetouchError(f"cannot read the recipe {args.recipe}: {err}") from err
    overrides = {
        k: getattr(args, k)
        for k in ("data", "data_dir", "resolution", "vae_steps", "unet_steps", "checkpoint_every", "num_latents")
        if getattr(args, k) is not None
    }
    config = replace(config, **overrides)
    output = Path(args.output)
    if (output / "work").exists() and not args.resume:
        raise RetouchError(
            f"{output} already holds a training run: pass --resume to continue it, or pick another --output"
        )
    try:
        folder = train_ldm_model(config, output, quiet=args.quiet, log=lambda m: None if args.json else print(m))
    except (FileNotFoundError, ValueError) as err:
        raise RetouchError(str(err)) from err
    emit(args, {"model": str(folder), "recipe": json.loads(config.to_json())},
         [f"model written to {folder} (load it with --model {folder})"])
    return 0
