"""Arguments and output shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retouch.models.loading import DEFAULT_MODEL, DTYPES

if TYPE_CHECKING:
    from retouch.models.loading import LoadedModel


def add_global_flags(parser: argparse.ArgumentParser) -> None:
    """--quiet and --json, also accepted after the subcommand (SUPPRESS keeps the top-level value)."""
    parser.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON to stdout"
    )


def add_denoising_arguments(parser: argparse.ArgumentParser, scheduler: str | None = None) -> None:
    """--steps, --guidance-scale and --scheduler (default: ``scheduler``, else generate's)."""
    from retouch.core.generate import DEFAULT_GUIDANCE_SCALE, DEFAULT_SCHEDULER
    from retouch.core.schedulers import DEFAULT_STEPS, SCHEDULER_NAMES

    scheduler = scheduler or DEFAULT_SCHEDULER
    parser.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help=f"denoising steps (default: {DEFAULT_STEPS})"
    )
    parser.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help=f"classifier-free guidance scale (default: the model's retouch.json, else {DEFAULT_GUIDANCE_SCALE})",
    )
    parser.add_argument(
        "--scheduler", choices=SCHEDULER_NAMES, default=scheduler, help=f"sampler (default: {scheduler})"
    )


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """--negative-prompt, --seed, --steps, --guidance-scale, --scheduler, --width and --height."""

    size_help = "pixels (default: the model's training size)"
    parser.add_argument("--negative-prompt", default="", help="what to steer away from")
    parser.add_argument("--seed", type=int, default=None, help="seed of the initial noise (default: random)")
    add_denoising_arguments(parser)
    parser.add_argument("--width", type=int, default=None, help=size_help)
    parser.add_argument("--height", type=int, default=None, help=size_help)


def add_output_folder_argument(parser: argparse.ArgumentParser) -> None:
    """--output DIR, where numbered files go (default: outputs/)."""
    parser.add_argument("--output", type=Path, default=Path("outputs"), metavar="DIR", help="default: outputs/")


def sampling_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``add_sampling_arguments``' flags (but the seed) for a call of
    ``generate``, ``stylize`` or ``interpolate``, with progress bars unless --quiet."""
    return {
        "negative_prompt": args.negative_prompt,
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "scheduler": args.scheduler,
        "width": args.width,
        "height": args.height,
        "progress": not args.quiet,
    }


def add_model_arguments(parser: argparse.ArgumentParser, default: str | None = DEFAULT_MODEL) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=default,
        help="bundled model name, diffusers folder, .safetensors file or hub id"
        + (f" (default: {default})" if default else ""),
    )
    group.add_argument(
        "--config",
        default=None,
        metavar="FOLDER",
        help="diffusers folder with the configs of a single-file model",
    )
    group.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    group.add_argument(
        "--dtype", choices=tuple(DTYPES), default=None, help="weights dtype (default: float32)"
    )


def add_adapter_arguments(parser: argparse.ArgumentParser) -> None:
    """--concept, --embedding, --lora (each repeatable) and --lora-dir."""
    group = parser.add_argument_group("concepts and adapters")
    group.add_argument(
        "--concept", action="append", default=[], metavar="OUT", help="a 'retouch train' output folder (repeatable)"
    )
    group.add_argument(
        "--embedding",
        action="append",
        default=[],
        metavar="FILE[:TOKEN]",
        help="a Textual Inversion embedding, diffusers or A1111 format (repeatable; TOKEN renames it)",
    )
    group.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="FILE[:SCALE]",
        help="a LoRA file, diffusers or kohya keys (repeatable; SCALE default 1)",
    )
    group.add_argument(
        "--lora-dir", default=None, metavar="DIR", help="where the prompt's <lora:name:weight> tags are found"
    )


def adapter_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The adapter flags as the job fields batch and replay read (only those given)."""
    fields = {"concepts": args.concept, "embeddings": args.embedding, "loras": args.lora, "lora_dir": args.lora_dir}
    return {name: value for name, value in fields.items() if value}


def load_adapted_model(args: argparse.Namespace, prompt_fields: Sequence[str] = ()) -> LoadedModel:
    """``load_model`` for the model flags, with the adapter flags applied. The ``<lora:name:w>`` tags
    in the prompts ``args.<field>`` are taken out of them (``args`` is updated) and found in
    --lora-dir, before the model loads."""
    from retouch.models.adapter_options import take_lora_tags
    from retouch.models.adapters import apply_adapters
    from retouch.models.loading import load_model

    loras = list(args.lora)
    for field in prompt_fields:
        if getattr(args, field, None):
            prompt, tagged = take_lora_tags(getattr(args, field), args.lora_dir)
            setattr(args, field, prompt)
            loras += tagged
    model = load_model(args.model, args.device, args.dtype, args.config)
    return apply_adapters(model, concepts=args.concept, embeddings=args.embedding, loras=loras)


def emit(args: argparse.Namespace, payload: dict[str, Any], lines: list[str]) -> None:
    """Print ``payload`` as JSON with --json, else ``lines`` for a person."""
    if args.json:
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for line in lines:
            print(line)


def add_tries_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--tries N|auto``: draw ``what`` again from the next seed(s) while the judge rejects it."""
    parser.add_argument(
        "--tries",
        type=number_or_auto(int, "tries"),
        default="auto",
        metavar="N|auto",
        help=f"draw {what} again from the next seed(s) while --judge accepts none, at most N times; the seed kept "
        "is recorded (default: auto, 3 when the oracle of an installed world judges the target caption, else 1)",
    )


def number_or_auto(kind: type[int] | type[float], name: str) -> Callable[[str], int | float | str]:
    """An argparse ``type``: the word ``auto`` or a number of ``kind`` (the library checks its range)."""

    def parse(text: str) -> int | float | str:
        if text == "auto":
            return text
        try:
            return kind(text)
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{name} must be {noun} or 'auto', got {text!r}") from None

    return parse
