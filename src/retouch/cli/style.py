"""``retouch style PROMPT --style PHRASE --amount THETA``: turn a style up or down."""

from __future__ import annotations

import argparse
from typing import Any

from retouch.cli.common import (
    add_adapter_arguments,
    add_global_flags,
    add_model_arguments,
    add_output_folder_argument,
    add_sampling_arguments,
    emit,
    load_adapted_model,
    number_or_auto,
    sampling_options,
)


def add_style_arguments(parser: argparse.ArgumentParser, prefix: str = "", auto: bool = False) -> None:
    """--{prefix}amount and --{prefix}direction; ``generate`` uses ``prefix="style-"``; with
    ``auto`` the amount may be the word ``auto`` (``retouch style``).

    --{prefix}strength, the amount's old flag, is still accepted."""
    from retouch.steer.style import DEFAULT_STYLE_AMOUNT, DEFAULT_STYLE_DIRECTION, STYLE_DIRECTIONS

    parser.add_argument(
        f"--{prefix}amount",
        f"--{prefix}strength",
        dest=f"{prefix.replace('-', '_')}amount",
        type=number_or_auto(float, "amount") if auto else float,
        default=None,
        metavar="THETA|auto" if auto else "THETA",
        help=f"how much style, theta: 0 = the plain prompt, < 0 weaker, > 0 stronger; pictures often "
        f"break down past 0.4 (default: {DEFAULT_STYLE_AMOUNT}; --{prefix}strength is its old name)"
        + (
            "; auto: the amount from 0 to 2 a judge finds shows the style best while keeping the plain picture"
            if auto
            else ""
        ),
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
    add_style_arguments(parser, auto=True)
    parser.add_argument(
        "--judge",
        default=None,
        metavar="oracle|PATH",
        help="scorer for --amount auto: 'oracle' (shapes-64; the default for its captions) or a local CLIP "
        "model folder (default elsewhere: the bundled shapes-64 CLIP)",
    )
    parser.add_argument(
        "--sweep",
        default=None,
        metavar="A:B:N",
        help="N amounts from A to B instead of --amount: each picture plus a grid of them in one row "
        "(write --sweep=-0.5:1:7 when A is negative)",
    )
    add_sampling_arguments(parser)
    add_output_folder_argument(parser)
    add_model_arguments(parser)
    add_adapter_arguments(parser)
    add_global_flags(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from retouch.errors import RetouchError
    from retouch.io.atomic import check_writable
    from retouch.io.outputs import save_numbered
    from retouch.steer.style import parse_sweep, style_amount, style_sweep, stylize

    if args.sweep is not None and args.amount is not None:
        raise RetouchError("pass either --amount or --sweep, not both")
    if args.judge is not None and args.amount != "auto":
        raise RetouchError("--judge chooses the amount: pass it with --amount auto")
    if args.sweep is not None:
        parse_sweep(args.sweep)  # a bad spec fails before the model loads
    check_writable(args.output)
    model = load_adapted_model(args, ("prompt", "negative_prompt"))
    options = sampling_options(args)
    if args.amount == "auto":
        return run_auto(args, model, options)
    if args.sweep is None:
        amount = style_amount(args.amount, None)
        result = stylize(model, args.prompt, args.style, amount, args.direction, seed=args.seed, **options)
        path = str(save_numbered(args.output, result.images, result.recipes)[0])
        payload = {"files": [path], "amounts": [amount], "seconds": result.seconds, "recipe": result.recipes[0]}
        emit(args, payload, [f"wrote {path} (style {args.style!r} at {amount:g})"])
        return 0

    sweep = style_sweep(model, args.prompt, args.style, args.sweep, args.direction, seed=args.seed, **options)
    saved = sweep.save(args.output)
    files, grid = [str(path) for path in saved.files], str(saved.sheet)
    payload = {
        "files": files,
        "grid": grid,
        "amounts": sweep.amounts,
        "seconds": sweep.seconds,
        "recipe": sweep.grid_recipe,
    }
    amounts = ", ".join(f"{theta:g}" for theta in sweep.amounts)
    emit(args, payload, [f"wrote {len(files)} pictures at amounts {amounts}", f"wrote {grid}"])
    return 0


def run_auto(args: argparse.Namespace, model: Any, options: dict[str, Any]) -> int:
    """``--amount auto``: the judged amount's picture, with the sweep in the JSON payload."""
    from retouch.io.outputs import save_numbered
    from retouch.steer.style_auto import stylize_auto

    chosen = stylize_auto(model, args.prompt, args.style, args.direction, seed=args.seed, judge=args.judge, **options)
    path = str(save_numbered(args.output, chosen.images, chosen.recipes)[0])
    report = chosen.report
    payload = {
        "files": [path],
        "amounts": [report["amount"]],
        "seconds": chosen.seconds,
        "recipe": chosen.recipes[0],
        "report": report,
    }
    verdict = "accepted" if report["accepted"] else "none accepted, the closest"
    lines = [
        f"judge {report['judge']}: amount {report['amount']:g} ({verdict})",
        f"wrote {path} (style {args.style!r} at {report['amount']:g})",
    ]
    emit(args, payload, lines)
    return 0
