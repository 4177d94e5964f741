"""``serve``: load the model, build the app, launch it with its limits.

Security: the server listens on 127.0.0.1 unless told otherwise (and warns when it listens
further without ``--auth``); uploads are capped (``max_file_size``) and checked against the
CLI's pixel limits by the handlers; the browser may read only the outputs folder (and gradio's
own cache); there is no share link and no analytics.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from retouch.errors import RetouchError
from retouch.io.atomic import check_writable
from retouch.ui.session import DEFAULT_OUTPUTS, UISession

logger = logging.getLogger("retouch.ui")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORT = 7860
DEFAULT_MAX_FILE_SIZE = "10mb"


@dataclass
class ServeOptions:
    """How ``retouch serve`` listens and where it writes."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    auth: str | None = None  # "user:password"
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE


def server_threads(requested: int | None = None) -> int:
    """The torch threads a CPU server runs the model with: ``requested``, else one fewer than
    torch's default (at least 1). The spare core serves gradio's event loop and a browser on the
    same machine; with every core computing, torch's threads spin-wait against them (on a 2-core
    machine an Edit run took 1.50 s in the server with 2 threads, 1.12 s with 1)."""
    if requested is not None:
        if requested < 1:
            raise RetouchError(f"--threads must be at least 1, got {requested}")
        return requested
    return max(1, torch.get_num_threads() - 1)


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    """``user:password`` as gradio's pair; the password may hold colons."""
    if auth is None:
        return None
    user, colon, password = auth.partition(":")
    if not colon or not user or not password:
        raise RetouchError("--auth takes user:password (both non-empty), e.g. --auth anna:s3cret")
    return user, password


# gradio redraws a running event's elapsed-time counter and its ETA bar on every animation frame;
# in a browser drawing in software on the server's own cores that steals a core from the model.
# The progress bar and its "k/n steps" text stay: they change only when a step ends.
STILL_PROGRESS_CSS = ".eta-bar, .meta-text, .meta-text-center { display: none !important; }"


def launch_options(options: ServeOptions, outputs: Path = DEFAULT_OUTPUTS) -> dict[str, Any]:
    """``Blocks.launch``'s arguments for ``options`` (the browser may read ``outputs``); warns when
    the server is reachable from other machines with no password."""
    auth = parse_auth(options.auth)
    if options.host not in LOCAL_HOSTS and auth is None:
        logger.warning(
            "listening on %s with no authentication: anyone who can reach this port can use the model "
            "and read the outputs; add --auth user:password",
            options.host,
        )
    if not 0 < options.port < 65536:
        raise RetouchError(f"--port must be in 1..65535, got {options.port}")
    check_writable(outputs)
    return {
        "server_name": options.host,
        "server_port": options.port,
        "auth": auth,
        "share": False,
        "max_file_size": options.max_file_size,
        "allowed_paths": [str(Path(outputs).resolve())],
        "show_error": False,  # only gr.Error messages reach the browser, never an exception's text
        "ssr_mode": False,
        "mcp_server": False,
        "footer_links": ["gradio", "settings"],
        "css": STILL_PROGRESS_CSS,
    }


def serve(session: UISession, options: ServeOptions, *, block: bool = True) -> Any:
    """Launch the UI over ``session``; returns the running app (``app.close()`` stops it) when
    ``block`` is False, else serves until interrupted."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no calls home
    from retouch.ui.app import build_app

    settings = launch_options(options, session.outputs)
    app = build_app(session)
    app.queue(default_concurrency_limit=1)
    app.launch(prevent_thread_lock=not block, quiet=not block, **settings)
    return app
