"""``retouch batch JOBS.jsonl --out DIR``: many jobs, one model load, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path

from retouch.cli.common import add_global_flags, add_model_arguments, emit


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "batch",
        help="run a JSONL file of jobs (resumable; splits across 'accelerate launch' processes)",
        description=(
            'Run one job per JSONL line, e.g. {"id": "g1", "task": "generate", "prompt": "...", '
            '"seed": 1}. Writes DIR/ID.png and DIR/ID.json (or DIR/ID.error.json); a re-run skips finished '
            "jobs. Exits 1 when any job failed."
        ),
    )
    parser.add_argument("jobs", type=Path, help="JSONL file, one job per line")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    add_model_arguments(parser, default=None)
    add_global_flags(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from retouch.batch.runner import run_batch

    # Under `accelerate launch --multi_gpu` (torchrun) without GPUs, cpu=True gives gloo processes.
    cpu = args.device == "cpu" or parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    device = args.device or (str(state.device) if state.num_processes > 1 else None)
    summary = run_batch(
        args.jobs,
        args.out,
        args.model,
        device=device,
        dtype=args.dtype,
        config=args.config,
        progress=not args.quiet,
        state=state,
    )
    if state.is_main_process:
        lines = [
            f"{r.status:7} {r.id}" + (f": {r.error}" if r.error else "") + (f" ({r.note})" if r.note else "")
            for r in summary.results
        ]
        counts = f"{summary.count('ok')} ok, {summary.failed} failed, {summary.count('skipped')} skipped"
        lines.append(f"{counts} -> {args.out}")
        emit(args, summary.to_dict(), lines)
    return 1 if summary.failed else 0
