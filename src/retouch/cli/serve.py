"""``retouch serve``: the web UI (gradio) over the loaded model."""

from __future__ import annotations

import argparse
from pathlib import Path

from retouch.cli.common import add_global_flags, add_model_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="start the web UI (Edit, Generate, Instruct, Steer, Imagic, Concepts, PNG info) in the browser",
        description="Start the web UI on http://HOST:PORT (default http://127.0.0.1:7860): open it in a "
        "browser; the Edit tab comes first. Every picture made is also saved, with its recipe, under "
        "--outputs. The server listens only on this machine unless --host says otherwise; then give "
        "--auth user:password, since anyone who reaches the port can use it.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--outputs", type=Path, default=Path("outputs/ui"), metavar="DIR", help="default: outputs/ui/")
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD", help="ask for this login in the browser")
    parser.add_argument(
        "--max-file-size", default="10mb", metavar="SIZE", help="largest upload, e.g. 10mb or 500kb (default: 10mb)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads for a model on the CPU (default: one fewer than the cores, at least 1: the "
        "spare core serves the web server and a local browser)",
    )
    parser.add_argument(
        "--instruct-model",
        default=None,
        metavar="M",
        help="the Instruct tab's model, loaded on its first run (default: the bundled shapes-64-instruct)",
    )
    parser.add_argument(
        "--concept",
        action="append",
        default=[],
        metavar="DIR",
        help="offer this trained concept in every tab (repeatable)",
    )
    add_model_arguments(parser)
    add_global_flags(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from retouch.models.loading import load_model
    from retouch.ui import ServeOptions, UISession, launch_options, serve
    from retouch.ui.server import server_threads

    options = ServeOptions(host=args.host, port=args.port, auth=args.auth, max_file_size=args.max_file_size)
    launch_options(options, args.outputs)  # a bad --auth, --port or --outputs fails before the model loads
    threads = server_threads(args.threads)  # a bad --threads fails before the model loads
    model = load_model(args.model, args.device, args.dtype, args.config)
    if model.pipe.device.type == "cpu":
        torch.set_num_threads(threads)
    session = UISession(model, outputs=args.outputs)
    if args.instruct_model:
        session.instruct_model = args.instruct_model
    for folder in args.concept:
        session.add_concept(folder)
    print(f"retouch serve: open http://{args.host}:{args.port} in a browser (Ctrl+C stops it)")
    serve(session, options)
    return 0
