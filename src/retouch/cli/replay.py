"""``retouch replay IMAGE.png``: re-run the recipe a PNG carries."""

from __future__ import annotations

import argparse
from pathlib import Path

from retouch.cli.common import adapter_fields, add_adapter_arguments, add_global_flags, add_model_arguments, emit


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "replay",
        help="re-create an image from the recipe stored in its PNG",
        description="Re-create an image from its PNG recipe and say whether the pixels match bit for bit.",
    )
    parser.add_argument("image", type=Path, help="a PNG written by retouch (or by AUTOMATIC1111)")
    parser.add_argument("--output", type=Path, default=None, metavar="PATH", help="default: IMAGE.replay.png")
    add_model_arguments(parser, default=None)
    add_adapter_arguments(parser)
    add_global_flags(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from retouch.batch.replay import replay

    result = replay(
        args.image,
        args.output,
        args.model,
        device=args.device,
        dtype=args.dtype,
        config=args.config,
        progress=not args.quiet,
        adapters=adapter_fields(args),
    )
    payload = {
        "file": str(result.path),
        "identical": result.identical,
        "seconds": result.seconds,
        "recipe": result.recipe,
    }
    match = "identical to the source" if result.identical else "DIFFERENT from the source"
    emit(args, payload, [f"wrote {result.path} ({match}, {result.seconds:.2f}s)"])
    return 0
