"""``retouch interpolate PROMPT_A PROMPT_B``: frames between two prompts with the seed fixed."""

from __future__ import annotations

import argparse

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


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from retouch.steer.interpolate import DEFAULT_FRAMES
    from retouch.steer.strip import GIF_FRAME_MS

    parser = subparsers.add_parser(
        "interpolate",
        help="frames between two prompts, spherically interpolated in text-embedding space",
        description="Slerp token by token from PROMPT_A's text embeddings to PROMPT_B's with the initial "
        "noise fixed. Writes every frame (each PNG replays alone), a contact strip and an animated GIF.",
    )
    parser.add_argument("prompt_a", help="the first frame's prompt")
    parser.add_argument("prompt_b", help="the last frame's prompt")
    parser.add_argument(
        "--frames", type=int, default=DEFAULT_FRAMES, help=f"frames, ends too (default: {DEFAULT_FRAMES})"
    )
    parser.add_argument(
        "--noise-seed-b",
        type=int,
        default=None,
        metavar="SEED",
        help="also slerp the initial noise, from --seed's to this seed's",
    )
    parser.add_argument(
        "--layout-steps",
        type=int,
        default=0,
        metavar="K",
        help="take every frame's first K sampling steps on the midpoint prompt, so all frames keep one "
        "layout (the ends then differ from plain generations of A and B; default: 0, off)",
    )
    parser.add_argument(
        "--hold-common",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="keep what the two prompts share: for this fraction of the steps (0 to 1) every frame "
        "takes the first prompt's cross-attention maps (prompt-to-prompt), and its pixels outside "
        "where the prompts disagree (found as edit finds its mask) are the first frame's, so only "
        "what they differ in moves (default: 0, off; not with --layout-steps)",
    )
    parser.add_argument(
        "--frame-ms", type=int, default=GIF_FRAME_MS, help=f"GIF frame duration (default: {GIF_FRAME_MS})"
    )
    add_sampling_arguments(parser)
    add_output_folder_argument(parser)
    add_model_arguments(parser)
    add_adapter_arguments(parser)
    add_global_flags(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from retouch.core.limits import check_number
    from retouch.io.atomic import check_writable
    from retouch.steer.interpolate import interpolate

    check_number("frame_ms", args.frame_ms)
    check_writable(args.output)
    model = load_adapted_model(args, ("prompt_a", "prompt_b", "negative_prompt"))
    result = interpolate(
        model,
        args.prompt_a,
        args.prompt_b,
        frames=args.frames,
        seed=args.seed,
        noise_seed_b=args.noise_seed_b,
        layout_steps=args.layout_steps,
        hold_common=args.hold_common,
        **sampling_options(args),
    )
    saved = result.save(args.output, frame_ms=args.frame_ms)
    frames, strip, gif = [str(path) for path in saved.files], str(saved.sheet), str(saved.animation)
    payload = {
        "frames": frames,
        "strip": strip,
        "gif": gif,
        "ts": result.ts,
        "seconds_per_frame": result.seconds,
        "recipe": result.strip_recipe,
    }
    lines = [f"wrote {len(frames)} frames {frames[0]} ... {frames[-1]}", f"wrote {strip}", f"wrote {gif}"]
    emit(args, payload, lines)
    return 0
