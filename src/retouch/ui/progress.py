"""Cancel at the next step: gradio's tqdm tracking, with a check of the cancel flag.

The library reports progress through tqdm (diffusers' pipelines, the blend loop, Imagic's
stages). ``gr.Progress(track_tqdm=True)`` turns those bars into the browser's progress bar;
``cancellable`` puts a thin wrapper around that tracker for one run, so the first tqdm step after
Cancel raises ``RunCancelled`` and the model is free again within one denoising step. Without a
tracker (a handler called outside gradio) it does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gradio.context import LocalContext

from retouch.ui.session import RunCancelled


class _CancellableProgress:
    """gradio's per-run ``Progress``, which raises once ``flag`` is set."""

    def __init__(self, inner: Any, flag: threading.Event) -> None:
        self._inner, self._flag = inner, flag

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _check(self) -> None:
        if self._flag.is_set():
            raise RunCancelled("cancelled")

    def tqdm(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        tracked = self._inner.tqdm(*args, **kwargs)
        return self if tracked is self._inner else tracked

    def update(self, n: int | float = 1) -> None:
        self._check()
        self._inner.update(n)

    def __iter__(self) -> _CancellableProgress:
        return self

    def __next__(self) -> Any:
        self._check()
        return next(self._inner)


@contextmanager
def cancellable(flag: threading.Event) -> Iterator[None]:
    """Within the block, this run's tracked tqdm steps raise ``RunCancelled`` once ``flag`` is set."""
    tracker = LocalContext.progress.get(None)
    if tracker is None:
        yield
        return
    token = LocalContext.progress.set(_CancellableProgress(tracker, flag))
    try:
        yield
    finally:
        LocalContext.progress.reset(token)
