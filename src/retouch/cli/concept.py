"""``retouch concept merge OUT1 OUT2 --output OUT``: merge separately trained Custom Diffusion concepts."""

from __future__ import annotations

import argparse

from retouch.cli.common import add_global_flags, emit


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("concept", help="work with trained concepts", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    merge = actions.add_parser(
        "merge",
        help="merge Custom Diffusion concepts (the paper's constrained key/value merge)",
        description="Merge two or more Custom Diffusion concepts trained on the same base model into one "
        "concept folder: each cross-attention key/value weight is the closed-form constrained least-squares "
        "solution of Kumari et al. 2023 (eq. 5), so every concept's captions map as its own weights map them.",
    )
    merge.add_argument("concepts", nargs="+", metavar="OUT", help="concept folders written by train custom-diffusion")
    merge.add_argument("--output", required=True, help="new folder for the merged concept")
    merge.add_argument("--model", help="the base model (default: the one the concepts record)")
    merge.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_global_flags(merge)
    merge.set_defaults(run=run_merge)
    return parser


def run_merge(args: argparse.Namespace) -> int:
    from retouch.models.loading import load_model
    from retouch.train.concept_merge import merge_concepts

    model = load_model(args.model, args.device) if args.model else None
    manifest = merge_concepts(args.concepts, args.output, model)
    emit(args, {"concept": args.output, **manifest},
         [f"merged {', '.join(manifest['tokens'])} into {args.output} (use it with --concept {args.output})"])
    return 0
