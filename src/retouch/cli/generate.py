"""``retouch generate PROMPT``: text to image."""

from __future__ import annotations

import argparse
import time
from functools import partial

from retouch.cli.common import (
    add_adapter_arguments,
    add_global_flags,
    add_model_arguments,
    add_output_folder_argument,
    add_sampling_arguments,
    emit,
    load_adapted_model,
    sampling_options,
)
from retouch.cli.style import add_style_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate",
        help="generate images from a text prompt",
        description="Generate images from a text prompt. Each PNG carries its recipe (see 'retouch replay').",
    )
    parser.add_argument("prompt", help="what to draw, e.g. 'a large red circle on a blue background'")
    parser.add_argument("--num-images", type=int, default=1, help="images to make; image i uses seed + i")
    add_sampling_arguments(parser)
    add_output_folder_argument(parser)
    parser.add_argument("--style", default=None, metavar="PHRASE", help="turn this style phrase up or down")
    add_style_arguments(parser, prefix="style-")
    add_model_arguments(parser)
    add_adapter_arguments(parser)
    add_global_flags(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from retouch.core.generate import generate
    from retouch.errors import RetouchError
    from retouch.io.atomic import check_writable
    from retouch.steer.style import style_amount, stylize

    if args.style is None and args.style_amount is not None:
        raise RetouchError("--style-amount needs --style PHRASE")
    check_writable(args.output)
    start = time.perf_counter()
    model = load_adapted_model(args, ("prompt", "negative_prompt"))
    load_seconds = time.perf_counter() - start
    if args.style is not None:  # generate with the style turned up or down, recorded as a style task
        amount = style_amount(args.style_amount, None)
        generate = partial(stylize, style=args.style, amount=amount, direction=args.style_direction)
    result = generate(model, args.prompt, num_images=args.num_images, seed=args.seed, **sampling_options(args))
    files = [str(path) for path in result.save(args.output)]
    payload = {
        "files": files,
        "seeds": [recipe["seed"] for recipe in result.recipes],
        "timings": {"load_s": load_seconds, "generate_s": result.seconds},
        "recipes": result.recipes,
    }
    lines = [
        f"wrote {file} (seed {seed}, {s:.2f}s)"
        for file, seed, s in zip(files, payload["seeds"], result.seconds, strict=True)
    ]
    emit(args, payload, lines)
    return 0
