"""How a component event calls a handler: on the model's lock, cancellable, with bad input shown
as the CLI's message (``gr.Error``) and anything unexpected logged here, never sent as a traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

from retouch.errors import RetouchError
from retouch.ui.progress import cancellable
from retouch.ui.session import RunCancelled, UISession, public_text

logger = logging.getLogger("retouch.ui")
T = TypeVar("T")
MODEL_QUEUE = "model"  # the gradio concurrency group of every event that runs the model


def client_id(request: gr.Request | None) -> str:
    """The browser session a request comes from ("local" when called outside a server)."""
    return (request.session_hash if request is not None else None) or "local"


def shown_errors(handler: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``handler(*args, **kwargs)``, its ``RetouchError`` raised as ``gr.Error`` with the CLI's
    message (server paths cut to file names)."""
    try:
        return handler(*args, **kwargs)
    except RunCancelled:
        raise gr.Error("Cancelled.", title="Cancelled", print_exception=False) from None
    except RetouchError as e:
        raise gr.Error(public_text(str(e)), print_exception=False) from None
    except gr.Error:
        raise
    except Exception as e:
        logger.exception("unexpected error in %s", getattr(handler, "__name__", handler))
        raise gr.Error(
            f"unexpected error ({type(e).__name__}); the server log has the details", print_exception=False
        ) from None


def on_model(session: UISession, request: gr.Request | None, handler: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``handler(session, *args, **kwargs)`` holding the model, stopped by Cancel at its next step."""

    def run() -> T:
        with session.run(client_id(request)) as flag, cancellable(flag):
            return handler(session, *args, **kwargs)

    run.__name__ = getattr(handler, "__name__", "run")
    return shown_errors(run)


def cancel_button(session: UISession, button: gr.Button, event: Any) -> None:
    """``button`` stops ``event``'s run: the browser stops waiting, the run stops at its next step."""

    def cancel(request: gr.Request) -> None:
        session.cancel(client_id(request))

    button.click(cancel, None, None, cancels=[event], queue=False)
