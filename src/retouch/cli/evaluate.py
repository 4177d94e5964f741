"""``retouch evaluate``: metrics of generated and edited pictures, as tables and plots.

    retouch evaluate --images OUT/ --references IN/ [--masks M/] [--captions C.jsonl] --out REPORT/
    retouch evaluate --pie --images EDITED.png [...] [--references SOURCE.png] [--masks MASK.png]
        [--target TEXT] --clip DIR [--dino DIR] --out REPORT/      (PIE-Bench's metrics)
    retouch evaluate --imagic-report OUT.json --out REPORT/
    retouch evaluate --sdedit-sweep --image IN.png --source TEXT --target TEXT --out REPORT/
    retouch evaluate --instruct-sweep --image IN.png --instruction TEXT [--source TEXT --target TEXT] --out REPORT/
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from retouch.cli.common import add_global_flags, add_model_arguments, emit
from retouch.errors import RetouchError
from retouch.models.loading import DEFAULT_MODEL

if TYPE_CHECKING:
    from retouch.metrics.evaluate import Evaluation

DEFAULT_STRENGTHS = "0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0"
DEFAULT_IMAGE_SCALES = "1.0,1.2,1.4,1.6,1.8,2.0,2.2"


def comma_numbers(text: str, low: float, high: float, what: str, low_open: bool = False) -> list[float]:
    """``"0.2,0.5"`` -> [0.2, 0.5], each in [low, high] (``(low, high]`` with ``low_open``)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or not all((low < v if low_open else low <= v) and v <= high for v in values):
        span = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise argparse.ArgumentTypeError(f"{what} must lie in {span}, got {text!r}")
    return values


def strengths_value(text: str) -> list[float]:
    return comma_numbers(text, 0, 1, "strengths", low_open=True)


def scales_value(text: str) -> list[float]:
    return comma_numbers(text, 1, 50, "image guidance scales")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="score outputs: CLIP score, LPIPS, FID/KID, PSNR/SSIM in and out of a mask, shapes-64 oracle",
        description="Score a folder of outputs against references and captions, an Imagic eta sweep, or an "
        "SDEdit strength sweep. Writes Markdown, CSV and JSON tables (and PNG plots) to --out. A metric whose "
        "network is missing is skipped with a note naming the file it needs; the others still run.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--images", type=Path, nargs="+", metavar="DIR", help="the outputs to score (with --pie: or picture files)"
    )
    mode.add_argument("--imagic-report", type=Path, metavar="OUT.json", help="plot an Imagic eta sweep")
    mode.add_argument("--sdedit-sweep", action="store_true", help="run SDEdit at several strengths and plot")
    mode.add_argument(
        "--instruct-sweep",
        action="store_true",
        help="run InstructPix2Pix at several image guidance scales and plot CLIP directional against image "
        "similarity (the paper's figure; --image, --instruction, and --source/--target captions)",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where tables and plots go")
    parser.add_argument(
        "--references", type=Path, metavar="DIR", help="inputs/originals, matched by file name (--pie: or one file)"
    )
    parser.add_argument(
        "--masks", type=Path, metavar="DIR", help="masks (white = inside), matched by file name (--pie: or one file)"
    )
    parser.add_argument(
        "--captions", type=Path, metavar="FILE.jsonl", help='{"file_name", "text"} rows (default: PNG recipes)'
    )
    parser.add_argument(
        "--clip",
        default=None,
        metavar="PATH",
        help="CLIP model folder or cached hub id (default: the bundled shapes-64 CLIP when installed)",
    )
    parser.add_argument(
        "--lpips-weights", action="append", default=None, metavar="PATH", help="LPIPS network file(s)"
    )
    parser.add_argument("--inception", default=None, metavar="PATH", help="TorchScript Inception for FID/KID")
    parser.add_argument(
        "--fid-features", choices=("inception", "clip"), default="inception", help="features for FID/KID"
    )
    pie = parser.add_argument_group("--pie (PIE-Bench, Ju et al. 2023; also takes --source and --target)")
    pie.add_argument(
        "--pie",
        action="store_true",
        help="score edits with PIE-Bench's metrics: background PSNR/LPIPS/MSE/SSIM, CLIP whole and edited, "
        "structure distance. Masks default to the NAME.mask.png an edit writes, sources and prompts to its recipe",
    )
    pie.add_argument("--dino", metavar="DIR", help="transformers DINO ViT folder (e.g. facebook/dino-vitb8)")
    pie.add_argument(
        "--no-pie-border",
        dest="pie_border",
        action="store_false",
        help="count the picture's one-pixel frame as background (PIE-Bench counts it as edited)",
    )
    sweep = parser.add_argument_group("--sdedit-sweep")
    sweep.add_argument("--image", type=Path, help="the picture to edit")
    sweep.add_argument("--source", metavar="TEXT", help="a caption of the picture (--pie: the source prompt)")
    sweep.add_argument("--target", metavar="TEXT", help="a caption of the wanted picture (--pie: the target prompt)")
    sweep.add_argument(
        "--strengths",
        type=strengths_value,
        default=strengths_value(DEFAULT_STRENGTHS),
        help=f"comma-separated (default: {DEFAULT_STRENGTHS})",
    )
    sweep.add_argument("--seed", type=int, default=0)
    sweep.add_argument("--steps", type=int, default=None, help="(default: 25; --instruct-sweep: the model's)")
    sweep.add_argument("--instruction", metavar="TEXT", help="--instruct-sweep: what to change")
    sweep.add_argument(
        "--image-guidance-scales",
        type=scales_value,
        default=scales_value(DEFAULT_IMAGE_SCALES),
        help=f"--instruct-sweep: comma-separated, each >= 1 (default: {DEFAULT_IMAGE_SCALES})",
    )
    add_model_arguments(parser, default=None)
    add_global_flags(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from retouch.io.atomic import check_writable
    from retouch.metrics.evaluate import evaluate_images, evaluate_imagic_report, load_scorers

    check_writable(args.out)
    device = args.device or "cpu"
    if args.pie:
        return run_pie(args, device)
    if args.images and len(args.images) > 1:
        raise RetouchError("--images takes one folder (picture files only with --pie)")
    if args.images:
        scorers = load_scorers(args.clip, args.lpips_weights, args.inception, device)
        evaluation = evaluate_images(
            args.images[0], args.references, args.masks, args.captions, scorers, fid_features=args.fid_features
        )
    elif args.imagic_report:
        scorers = load_scorers(args.clip, args.lpips_weights, device=device, want=("clip", "lpips"))
        evaluation = evaluate_imagic_report(args.imagic_report, scorers)
    elif args.instruct_sweep:
        evaluation = run_instruct_sweep(args, device)
    else:
        evaluation = run_sdedit_sweep(args, device)
    report(args, evaluation, [f"{key}: {value}" for key, value in evaluation.headline.items()])
    return 0


def report(args: argparse.Namespace, evaluation: Evaluation, lines: list[str]) -> None:
    """Save the evaluation to --out and print ``lines``, its notes and files (or JSON)."""
    from retouch.metrics.report import json_safe

    files = evaluation.save(args.out)
    summary, notes = evaluation.headline, evaluation.notes
    lines = lines + [f"note: {note}" for note in notes] + [f"wrote {path}" for path in files.values()]
    payload = {"summary": summary, "notes": notes, "files": {k: str(v) for k, v in files.items()}}
    emit(args, json_safe(payload), lines)


def run_pie(args: argparse.Namespace, device: str) -> int:
    """PIE-Bench's metrics; prints the per-edit table under PIE-Bench's column names and the means
    in the paper's units."""
    from retouch.metrics.pie import COLUMNS, PAPER_COLUMNS
    from retouch.metrics.pie_evaluate import evaluate_pie, load_pie_scorers
    from retouch.metrics.report import markdown_table

    if not args.images:
        raise RetouchError("--pie needs --images (edited picture files or a folder of them)")
    scorers = load_pie_scorers(args.clip, args.lpips_weights, args.dino, device)
    evaluation = evaluate_pie(
        args.images, args.references, args.masks, args.target, args.captions, args.source, scorers, args.pie_border
    )
    present = [c for c in COLUMNS if any(c in row for row in evaluation.rows)]
    paper = [label for _, label, _ in PAPER_COLUMNS if label in evaluation.summary]
    lines = [markdown_table(evaluation.rows, ["file", *present]).rstrip()]
    lines += [f"means in PIE-Bench's table units ({len(evaluation.rows)} edited pictures):"]
    lines += [markdown_table([evaluation.summary], paper).rstrip()] if paper else []
    report(args, evaluation, lines)
    return 0


def run_sdedit_sweep(args: argparse.Namespace, device: str) -> Evaluation:
    """Check the sweep's arguments, load what it needs and run it."""
    from retouch.edit.sweep import sdedit_sweep
    from retouch.metrics.evaluate import load_scorers
    from retouch.models.loading import load_model

    for name in ("image", "source", "target"):
        if getattr(args, name) is None:
            raise RetouchError(f"--sdedit-sweep needs --{name}")
    scorers = load_scorers(args.clip, args.lpips_weights, device=device, want=("clip", "lpips"))
    model = load_model(args.model or DEFAULT_MODEL, args.device, args.dtype, args.config)
    return sdedit_sweep(
        model, args.image, args.source, args.target, args.strengths, scorers, seed=args.seed, steps=args.steps or 25
    )


def run_instruct_sweep(args: argparse.Namespace, device: str) -> Evaluation:
    """Check the sweep's arguments, load the instruct model (default: the bundled one) and CLIP, run it."""
    from retouch.edit.sweep import instruct_sweep
    from retouch.metrics.evaluate import load_scorers
    from retouch.models.loading import DEFAULT_INSTRUCT_MODEL, load_model

    for name in ("image", "instruction"):
        if getattr(args, name) is None:
            raise RetouchError(f"--instruct-sweep needs --{name}")
    if (args.source is None) != (args.target is None):
        raise RetouchError("--instruct-sweep: pass both --source and --target (captions before and after), or neither")
    scorers = load_scorers(args.clip, None, device=device, want=("clip",))
    model = load_model(args.model or DEFAULT_INSTRUCT_MODEL, args.device, args.dtype, args.config)
    return instruct_sweep(
        model, args.image, args.instruction, args.image_guidance_scales, scorers, source=args.source,
        target=args.target, seed=args.seed, steps=args.steps,
    )
