"""Run a benchmark's independent items in worker processes, one CPU thread each.

On a small CPU, N single-threaded processes beat one N-threaded process for batch-1 diffusion
(the threads of one small UNet call mostly wait on each other). Each worker loads the model once;
``map_in_workers`` returns the results in the items' order, so figures do not depend on N.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

import torch

from retouch.models.loading import LoadedModel, load_model

_state: dict[str, Any] = {}  # per worker process: the loaded model and the benchmark's settings


def worker_model() -> LoadedModel:
    return _state["model"]


def worker_settings() -> Any:
    return _state["settings"]


def _init(model: str, device: str | None, settings: Any, threads: int) -> None:
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    _state["model"] = load_model(model, device)
    _state["settings"] = settings


def map_in_workers(
    function: Callable[[Any], Any], items: Sequence[Any], workers: int, model: str, device: str | None,
    settings: Any,
) -> list[Any]:
    """``[function(item) for item in items]``, spread over ``workers`` processes (1: in this one)."""
    if workers <= 1:
        _init(model, device, settings, torch.get_num_threads())
        return [function(item) for item in items]
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
    with context.Pool(workers, initializer=_init, initargs=(model, device, settings, 1)) as pool:
        return pool.map(function, items, chunksize=1)
