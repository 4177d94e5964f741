"""``retouch instruct IMAGE "make the background green" --output OUT.png``: edit a picture by an
instruction with an InstructPix2Pix model."""

from __future__ import annotations

import argparse
from pathlib import Path

from retouch.cli.common import add_adapter_arguments, add_global_flags, add_model_arguments, emit, load_adapted_model


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from retouch.core.schedulers import SCHEDULER_NAMES
    from retouch.edit.instruct import DEFAULT_IMAGE_GUIDANCE_SCALE, DEFAULT_SCHEDULER
    from retouch.edit.layer import DEFAULT_FEATHER_PX
    from retouch.models.loading import DEFAULT_INSTRUCT_MODEL

    parser = subparsers.add_parser(
        "instruct",
        help="edit a picture by an instruction (InstructPix2Pix)",
        description="Edit IMAGE as INSTRUCTION says, with an InstructPix2Pix model (a UNet with 8 input "
        "channels) through diffusers' StableDiffusionInstructPix2PixPipeline. Writes OUT.png (with its "
        "recipe), OUT.mask.png (255 = edited), OUT.layer.png (RGBA edit layer) and OUT.json (report). "
        "With --preserve every pixel the edit did not change is the input's, bit for bit.",
    )
    parser.add_argument("image", type=Path, help="the picture to edit (any mode; never modified)")
    parser.add_argument("instruction", help='what to change, e.g. "make the background green"')
    parser.add_argument("--output", type=Path, required=True, metavar="OUT.png", help="the edited picture")
    parser.add_argument("--seed", type=int, default=None, help="seed (default: random, recorded)")
    parser.add_argument("--negative-prompt", default="", help="what to steer away from")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, else 25)")
    parser.add_argument(
        "--guidance-scale", type=float, default=None, help="text guidance (default: the model's, else 7.5)"
    )
    parser.add_argument(
        "--image-guidance-scale",
        type=float,
        default=None,
        help=f"image guidance, >= 1: how closely to keep the input (default: the model's, else "
        f"{DEFAULT_IMAGE_GUIDANCE_SCALE})",
    )
    parser.add_argument(
        "--scheduler", choices=SCHEDULER_NAMES, default=DEFAULT_SCHEDULER, help=f"(default: {DEFAULT_SCHEDULER})"
    )
    parser.add_argument(
        "--preserve",
        action="store_true",
        help="keep every pixel the edit did not change: composite the changed region, snapped to the "
        "object, onto the input",
    )
    parser.add_argument(
        "--feather",
        type=int,
        default=DEFAULT_FEATHER_PX,
        help=f"px over which --preserve's composite fades to the input (default: {DEFAULT_FEATHER_PX})",
    )
    add_model_arguments(parser, default=DEFAULT_INSTRUCT_MODEL)
    add_adapter_arguments(parser)
    add_global_flags(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from retouch.edit.instruct import instruct
    from retouch.edit.result import output_paths

    output_paths(args.output, (args.image,))  # before the model loads: a bad --output fails fast
    model = load_adapted_model(args, ("instruction", "negative_prompt"))
    result = instruct(
        model,
        args.image,
        args.instruction,
        seed=args.seed,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        image_guidance_scale=args.image_guidance_scale,
        negative_prompt=args.negative_prompt,
        scheduler=args.scheduler,
        preserve=args.preserve,
        feather=args.feather,
        progress=not args.quiet,
    )
    files = {name: str(path) for name, path in result.save(args.output).items()}
    report = result.report
    outside = report["metrics"]["outside"]
    if outside["identical"]:
        kept = "identical"
    else:
        kept = "n/a (no pixel lies outside)" if outside["psnr"] is None else f"PSNR {outside['psnr']:.1f} dB"
    lines = [
        f"region {report['region']}, mask {report['mask_area']:.1%} of the picture, seed {report['seed']}, "
        f"{report['timings']['total_s']:.2f}s",
        *([f"outside the mask and its feather band: {kept}"] if args.preserve else []),
        *(f"note: {note}" for note in report["input"]["notes"]),
        *(f"warning: {warning}" for warning in report["warnings"]),
        *(f"wrote {path}" for path in files.values()),
    ]
    emit(args, {"files": files, **report}, lines)
    return 0
