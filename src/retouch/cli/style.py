"""``retouch style PROMPT --style PHRASE --strength THETA``: turn a style up or down."""

from __future__ import annotations

import argparse
from pathlib import Path

from retouch.cli.common import add_global_flags, add_model_arguments, add_sampling_arguments, emit


def add_style_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """--{prefix}strength and --{prefix}direction; ``generate`` uses ``prefix="style-"``."""
    from retouch.steer.style import DEFAULT_STYLE_DIRECTION, DEFAULT_STYLE_STRENGTH, STYLE_DIRECTIONS

    parser.add_argument(
        f"--{prefix}strength",
        type=float,
        default=None,
        metavar="THETA",
        help=f"style strength theta: 0 = the plain prompt, < 0 weaker, > 0 stronger; pictures often "
        f"break down past 0.4 (default: {DEFAULT_STYLE_STRENGTH})",
    )
    parser.add_argument(
        f"--{prefix}direction",
        choices=STYLE_DIRECTIONS,
        default=DEFAULT_STYLE_DIRECTION,
        help="the style's direction: E(prompt) - E(prompt without the phrase) ('prompt'), or "
        f"E(phrase) - E('') ('phrase') (default: {DEFAULT_STYLE_DIRECTION})",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "style",
        help="make a style phrase stronger or weaker, in text-embedding space",
        description="Condition on slerp(e, e + v, theta): e the prompt's text embeddings, v the style "
        "phrase's direction. The seed and initial noise stay fixed, so theta = 0 is the plain picture.",
    )
    parser.add_argument("prompt", help="e.g. 'a large red circle on a blue background, pastel'")
    parser.add_argument("--style", required=True, metavar="PHRASE", help="the style's words, e.g. pastel")
    add_style_arguments(parser)
    parser.add_argument(
        "--sweep",
        default=None,
        metavar="A:B:N",
        help="N strengths from A to B instead of --strength: each picture plus a grid of them in one row "
        "(write --sweep=-0.5:1:7 when A is negative)",
    )
    add_sampling_arguments(parser)
    parser.add_argument(
        "--output", type=Path, default=Path("outputs"), metavar="DIR", help="default: outputs/"
    )
    add_model_arguments(parser)
    add_global_flags(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from retouch.cli.generate import next_index
    from retouch.errors import RetouchError
    from retouch.io.atomic import check_writable
    from retouch.io.png import save_png
    from retouch.models.loading import load_model
    from retouch.steer.style import DEFAULT_STYLE_STRENGTH, parse_sweep, style_sweep, stylize

    if args.sweep is not None and args.strength is not None:
        raise RetouchError("pass either --strength or --sweep, not both")
    if args.sweep is not None:
        parse_sweep(args.sweep)  # a bad spec fails before the model loads
    check_writable(args.output)
    model = load_model(args.model, args.device, args.dtype, args.config)
    options = {
        "negative_prompt": args.negative_prompt,
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "scheduler": args.scheduler,
        "width": args.width,
        "height": args.height,
        "progress": not args.quiet,
    }
    index = next_index(args.output)
    if args.sweep is None:
        strength = DEFAULT_STYLE_STRENGTH if args.strength is None else args.strength
        result = stylize(model, args.prompt, args.style, strength, args.direction, seed=args.seed, **options)
        recipe = result.recipes[0]
        path = str(save_png(result.images[0], args.output / f"{index:05d}-{recipe['seed']}.png", recipe))
        payload = {"files": [path], "strengths": [strength], "seconds": result.seconds, "recipe": recipe}
        emit(args, payload, [f"wrote {path} (style {args.style!r} at {strength:g})"])
        return 0

    sweep = style_sweep(model, args.prompt, args.style, args.sweep, args.direction, seed=args.seed, **options)
    stem = args.output / f"{index:05d}-{sweep.grid_recipe['seed']}"
    files = [
        str(save_png(image, f"{stem}-{k:02d}.png", recipe))
        for k, (image, recipe) in enumerate(zip(sweep.images, sweep.recipes, strict=True))
    ]
    grid = str(save_png(sweep.grid, f"{stem}-sweep.png", sweep.grid_recipe))
    payload = {
        "files": files,
        "grid": grid,
        "strengths": sweep.strengths,
        "seconds": sweep.seconds,
        "recipe": sweep.grid_recipe,
    }
    strengths = ", ".join(f"{theta:g}" for theta in sweep.strengths)
    emit(args, payload, [f"wrote {len(files)} pictures at strengths {strengths}", f"wrote {grid}"])
    return 0
