"""``retouch``: a thin command line over the Python API.

Each subcommand is a module with ``add_parser(subparsers) -> ArgumentParser`` and
``run(args) -> int``; to add one, import it in ``build_parser`` and append it to the list.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from retouch.errors import RetouchError
from retouch.version import __version__


def build_parser() -> argparse.ArgumentParser:
    # Imported here, after main() has quieted library logging, since they import diffusers.
    from retouch.cli import (
        batch,
        concept,
        edit,
        evaluate,
        generate,
        imagic,
        instruct,
        interpolate,
        replay,
        serve,
        style,
        train,
    )

    commands = [generate, replay, batch, train, concept, interpolate, style, edit, instruct, imagic, evaluate, serve]

    parser = argparse.ArgumentParser(
        prog="retouch", description="Text-guided image generation and editing with latent diffusion."
    )
    parser.add_argument("--version", action="version", version=f"retouch {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON to stdout")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for bad input, with the message on stderr)."""
    with _library_output() as quiet_library_bars:
        args = build_parser().parse_args(argv)
        if args.quiet:
            quiet_library_bars()
        try:
            return args.run(args)
        except RetouchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130


@contextmanager
def _library_output() -> Iterator[Callable[[], None]]:
    """retouch's warnings go to stderr as ``warning: ...``; diffusers' and transformers' logs are
    cut to errors, and their progress bars go when the yielded function is called. All of it is
    restored on exit, so calling main() in a test leaves no trace."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    saved = [(lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libraries]
    logger = logging.getLogger("retouch")
    saved_level = logger.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LowercaseLevelFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    for lib in libraries:
        lib.set_verbosity_error()

    def quiet_bars() -> None:
        for lib in libraries:
            lib.disable_progress_bar()

    try:
        yield quiet_bars
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
        for lib, (verbosity, bars) in zip(libraries, saved, strict=True):
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()
            else:
                lib.disable_progress_bar()


class _LowercaseLevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"
