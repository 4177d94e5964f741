"""A run's progress bar in the browser: gradio's tqdm tracking, sent a few times a second, and
stopped by Cancel at the next step.

The library reports progress through tqdm (diffusers' pipelines, the blend loop, Imagic's
stages). ``gr.Progress(track_tqdm=True)`` turns those bars into the browser's progress bar, one
message per step. ``cancellable`` puts a ``StepProgress`` in place of that tracker for one run:
it raises ``RunCancelled`` at the first tqdm step after Cancel, so the model is free again
within one denoising step, and it sends at most one update per ``every`` seconds. Redrawing the
bar on every step of a fast model costs a browser that draws in software (one on the server's
own cores, say) as much CPU as the model itself. Without a tracker (a handler called outside
gradio) it does nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import gradio as gr
from gradio.context import LocalContext

from retouch.ui.session import RunCancelled

PROGRESS_EVERY_S = 0.5  # the most often the browser's progress bar is redrawn


class StepProgress(gr.Progress):
    """gradio's per-run ``Progress``, which raises once ``flag`` is set and sends at most one
    update per ``every`` seconds (the first always)."""

    def __init__(self, flag: threading.Event, every: float = PROGRESS_EVERY_S) -> None:
        super().__init__(track_tqdm=False)  # the event's own tracker has already patched tqdm
        self._flag, self._every, self._sent = flag, every, -float("inf")

    def _progress_callback(self) -> Callable[[Any], None] | None:  # gradio asks this at every step
        if self._flag.is_set():
            raise RunCancelled("cancelled")
        send = gr.Progress._progress_callback()
        return None if send is None else partial(self._send, send)

    def _send(self, send: Callable[[Any], None], iterables: Any) -> None:
        now = time.monotonic()
        if now - self._sent >= self._every:
            self._sent = now
            send(iterables)


@contextmanager
def cancellable(flag: threading.Event, every: float = PROGRESS_EVERY_S) -> Iterator[None]:
    """Within the block, this run's tracked tqdm steps raise ``RunCancelled`` once ``flag`` is set."""
    if LocalContext.progress.get(None) is None:
        yield
        return
    token = LocalContext.progress.set(StepProgress(flag, every))
    try:
        yield
    finally:
        LocalContext.progress.reset(token)
