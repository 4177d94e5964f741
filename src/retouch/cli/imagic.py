"""``retouch imagic IMAGE --target TEXT [--output OUT.png] [--eta 0.7|auto]``: edit a real picture from
one target caption with Imagic (optimize an embedding, tune the model, interpolate)."""

from __future__ import annotations

import argparse
from pathlib import Path

from retouch.cli.common import (
    add_adapter_arguments,
    add_denoising_arguments,
    add_global_flags,
    add_model_arguments,
    add_tries_argument,
    emit,
    load_adapted_model,
    number_or_auto,
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from retouch.edit.imagic import DEFAULT_ETA, DEFAULT_SCHEDULER, TUNES
    from retouch.edit.imagic_region import IMAGIC_REGIONS

    parser = subparsers.add_parser(
        "imagic",
        help="edit a picture from one target caption (Imagic: embedding, tuning, interpolation)",
        description="Imagic (Kawar et al. 2022): (A) optimize the target caption's embedding to reconstruct "
        "the picture, (B) tune the model on the picture (LoRA or full), (C) sample from "
        "eta * target + (1 - eta) * optimized. A and B are cached, so other --eta values and seeds cost only "
        "sampling. Writes OUT.png (with its recipe) and OUT.json (report); with --eta auto also every "
        "sampled picture into OUT.sweep/.",
    )
    parser.add_argument("image", type=Path, help="the picture to edit (never modified)")
    parser.add_argument("--target", required=True, metavar="TEXT", help="a caption of the wanted picture")
    parser.add_argument(
        "--output", type=Path, default=None, metavar="OUT.png", help="(default: IMAGE.imagic.png beside the input)"
    )
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: random, recorded)")
    parser.add_argument(
        "--eta",
        type=number_or_auto(float, "eta"),
        default=DEFAULT_ETA,
        help=f"0 reconstructs the input, 1 is the target text; 'auto' sweeps 0.0..1.6 and takes the "
        f"accepted one the judge scores highest (default: {DEFAULT_ETA})",
    )
    parser.add_argument(
        "--region",
        choices=IMAGIC_REGIONS,
        default="auto",
        help="what stage C redraws: auto decides object or background from the picture (and --source) and "
        "keeps the input elsewhere; global samples the whole picture, as the paper does (default: auto)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="with --eta auto: seeds tried per eta (default: 1)")
    add_tries_argument(parser, "the whole eta sweep (--eta auto)")
    parser.add_argument("--tune", choices=TUNES, default="lora", help="stage B: LoRA adapters or the whole UNet")
    parser.add_argument("--embed-steps", type=int, default=None, help="stage A steps (default: sized to the model)")
    parser.add_argument("--tune-steps", type=int, default=None, help="stage B steps (default: sized to the model)")
    parser.add_argument("--lr-embed", type=float, default=None, help="stage A learning rate (default: 1e-3)")
    parser.add_argument("--lr-tune", type=float, default=None, help="stage B learning rate (default: sized)")
    parser.add_argument("--lora-rank", type=int, default=None, help="LoRA rank (default: 8)")
    parser.add_argument("--batch-size", type=int, default=None, help="noise draws per training step")
    parser.add_argument("--train-seed", type=int, default=0, help="seed of stages A and B (default: 0)")
    add_denoising_arguments(parser, scheduler=DEFAULT_SCHEDULER)
    parser.add_argument(
        "--cache", type=Path, default=None, metavar="DIR", help="stages A and B cache (default ~/.cache/retouch/imagic)"
    )
    parser.add_argument("--no-cache", action="store_true", help="recompute stages A and B and keep nothing")
    parser.add_argument(
        "--judge",
        default=None,
        metavar="oracle|PATH",
        help="scorer for --eta auto: a local CLIP model folder, or 'oracle' (shapes-64; the default for a "
        "canonical shapes-64 caption; else the bundled shapes-64 CLIP when installed)",
    )
    parser.add_argument(
        "--source", default=None, metavar="TEXT", help="a caption of the input (for the region and a CLIP judge)"
    )
    parser.add_argument(
        "--lpips-weights",
        action="append",
        default=None,
        metavar="PATH",
        help="LPIPS network file(s): preservation is then 1 - LPIPS (default: PSNR)",
    )
    parser.add_argument(
        "--sweep-dir", type=Path, default=None, metavar="DIR", help="where --eta auto writes every sample (OUT.sweep/)"
    )
    add_model_arguments(parser)
    add_adapter_arguments(parser)
    add_global_flags(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from retouch.batch.runner import check_writable
    from retouch.edit.imagic import imagic
    from retouch.edit.imagic_report import output_files
    from retouch.errors import RetouchError

    if not args.image.is_file():
        raise RetouchError(f"image not found: {args.image}")
    output = args.output or args.image.with_name(f"{args.image.stem}.imagic.png")
    output_files(output, args.image)  # before the run: a .png, and not the input
    check_writable(output.parent)
    model = load_adapted_model(args, ("target", "source"))
    result = imagic(
        model,
        args.image,
        args.target,
        eta=args.eta,
        seed=args.seed,
        region=args.region,
        seeds=args.seeds,
        tries=args.tries,
        tune=args.tune,
        embed_steps=args.embed_steps,
        tune_steps=args.tune_steps,
        lr_embed=args.lr_embed,
        lr_tune=args.lr_tune,
        lora_rank=args.lora_rank,
        batch_size=args.batch_size,
        train_seed=args.train_seed,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        scheduler=args.scheduler,
        cache_dir=args.cache,
        use_cache=not args.no_cache,
        judge=args.judge,
        source=args.source,
        lpips_weights=args.lpips_weights,
        progress=not args.quiet,
    )
    sweep_dir = args.sweep_dir or (output.with_suffix(".sweep") if args.eta == "auto" else None)
    files = {name: str(path) for name, path in result.save(output, sweep_dir).items()}
    emit(args, {"files": files, **result.report}, result.summary(files))
    return 0
