"""``retouch edit IMAGE --source TEXT --target TEXT --output OUT.png``: change what the captions
differ in, keep the rest."""

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


def strength_value(text: str) -> float | str:
    value = number_or_auto(float, "strength")(text)
    if value != "auto" and not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"strength must be in (0, 1], got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from retouch.edit.api import (
        DEFAULT_SCHEDULER,
        DEFAULT_STRENGTH,
        METHODS,
        REGION_CHOICES,
    )

    parser = subparsers.add_parser(
        "edit",
        help="edit the region two captions differ in (foreground, background or style)",
        description="Change exactly what the target caption says differently from the source caption, "
        "with an automatic mask, and keep every other pixel bit for bit. Writes OUT.png (with its "
        "recipe), OUT.mask.png (255 = edited), OUT.layer.png (RGBA edit layer) and OUT.json (report).",
    )
    parser.add_argument("image", type=Path, help="the picture to edit (any mode; never modified)")
    parser.add_argument("--source", required=True, metavar="TEXT", help="a caption of the picture")
    parser.add_argument("--target", required=True, metavar="TEXT", help="a caption of the wanted picture")
    parser.add_argument("--output", type=Path, required=True, metavar="OUT.png", help="the edited picture")
    parser.add_argument("--seed", type=int, default=None, help="seed (default: random, recorded)")
    add_denoising_arguments(parser, scheduler=DEFAULT_SCHEDULER)
    parser.add_argument(
        "--strength",
        type=strength_value,
        default=DEFAULT_STRENGTH,
        help=f"noise level in (0, 1], or 'auto': the smallest that takes, by bisection (default: {DEFAULT_STRENGTH})",
    )
    parser.add_argument(
        "--region", choices=REGION_CHOICES, default="auto", help="override the decided region (default: auto)"
    )
    parser.add_argument("--mask", type=Path, default=None, metavar="PNG", help="white = edit; overrides the mask")
    parser.add_argument("--method", choices=METHODS, default="blend", help="(default: blend)")
    parser.add_argument(
        "--judge",
        default=None,
        metavar="oracle|PATH",
        help="scorer for --strength auto: a local CLIP model folder, or 'oracle' (shapes-64; the default "
        "when both captions are canonical shapes-64 captions)",
    )
    add_tries_argument(parser, "the edit")
    parser.add_argument(
        "--classifier", choices=("rules", "llm"), default="rules", help="region classifier (default: rules)"
    )
    parser.add_argument(
        "--llm-url", default=None, metavar="URL", help="OpenAI-compatible endpoint for --classifier llm"
    )
    add_model_arguments(parser)
    add_adapter_arguments(parser)
    add_global_flags(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from retouch.edit.api import edit
    from retouch.edit.result import output_paths

    output_paths(args.output, (args.image, args.mask))  # before the model loads: a bad --output fails fast
    model = load_adapted_model(args, ("source", "target"))
    result = edit(
        model,
        args.image,
        args.source,
        args.target,
        method=args.method,
        region=args.region,
        mask=args.mask,
        strength=args.strength,
        seed=args.seed,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        scheduler=args.scheduler,
        judge=args.judge,
        classifier=args.classifier,
        llm_url=args.llm_url,
        tries=args.tries,
        progress=not args.quiet,
    )
    files = {name: str(path) for name, path in result.save(args.output).items()}
    report = result.report
    emit(args, {"files": files, **report}, [*summary(report), *(f"wrote {path}" for path in files.values())])
    return 0


def summary(report: dict) -> list[str]:
    """The report in a few lines: the region, the mask, the strength, what was kept, the notes."""
    outside = report["metrics"]["outside"]
    if outside["identical"]:
        kept = "identical"
    elif outside["psnr"] is None:  # no pixel lies outside the mask and its band (a global edit)
        kept = "n/a (no pixel lies outside)"
    else:
        kept = f"PSNR {outside['psnr']:.1f} dB"
    return [
        f"region {report['region']} (confidence {report['region_confidence']:.2f}), mask "
        f"{report['mask_area']:.1%} of the picture, strength {report['strength']}, seed {report['seed']}",
        f"outside the mask and its feather band: {kept}; {report['timings']['total_s']:.2f}s",
        *(f"note: {note}" for note in report["input"]["notes"]),
        *(f"warning: {warning}" for warning in report.get("warnings", [])),
    ]
