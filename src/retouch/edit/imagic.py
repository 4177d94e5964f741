"""Imagic (Kawar et al. 2022, "Imagic: Text-Based Real Image Editing with Diffusion Models"):
edit a real picture from a single target caption.

A. Optimize the target caption's embedding ``e_tgt`` (the text encoder's last hidden states,
   (1, tokens, dim)) with the model frozen, on the standard diffusion loss over the picture, so
   that the model reconstructs the picture from it: ``e_opt`` (paper, eq. 2).
B. Fine-tune the UNet on the picture conditioned on ``e_opt`` (eq. 3): LoRA adapters through peft
   (the default, as diffusers' ``train_text_to_image_lora``) or the whole UNet.
C. Sample with the tuned UNet from ``e = eta * e_tgt + (1 - eta) * e_opt`` (eq. 4), with
   classifier-free guidance. ``eta="auto"`` sweeps a grid (and seeds) and takes the best edit that
   keeps the input: the highest judge score among the accepted pictures, near-ties broken by how
   well the input is kept (``imagic_report.choose``). When the judge accepts no picture of the
   sweep, the sweep is drawn again from the next seeds (``tries``, as ``edit`` retries).

By default stage C redraws only the region the edit touches (``retouch.edit.imagic_region``: a
DiffEdit map between ``e_opt`` and ``e_tgt``, Blended Latent Diffusion inside it) and keeps the
input elsewhere; ``region="global"`` samples the whole picture, as the paper does.

This module is the call: check the inputs, prepare, run the stages (``imagic_stages``: A and B,
cached on disk by ``imagic_cache``; ``imagic_sample``: C), report (``imagic_report``). Training
(``retouch.train.finetune``) uses gradient checkpointing (not for small models on CPU, where it
would only cost time), and on CUDA mixed precision and 8-bit Adam (when bitsandbytes is installed).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from retouch.core.components import pipe_name
from retouch.core.latents import pixel_multiple
from retouch.core.limits import check_number, check_numbers
from retouch.core.prompts import warn_if_truncated, warn_if_unknown_tokens
from retouch.core.schedulers import DEFAULT_STEPS, SchedulerName
from retouch.core.seeding import MAX_SEED, random_seed
from retouch.core.weighting import prompt_text
from retouch.edit.imagic_cache import ImagicCache, default_cache_dir
from retouch.edit.imagic_region import ImagicRegionChoice
from retouch.edit.imagic_report import ImagicResult, imagic_result
from retouch.edit.imagic_sample import Sampling, SweepSample, interpolate_embeddings, stage_c, stage_c_region
from retouch.edit.imagic_stages import ImagicConfig, ImagicRun, imagic_config, is_small, prepare_run, stage_a, stage_b
from retouch.edit.judge import JudgeSpec, make_named_judge
from retouch.edit.tries import check_tries, resolve_tries
from retouch.errors import RetouchError
from retouch.io.convert import InputImage, pad_to_multiple, read_input_image, to_rgb
from retouch.models.loading import LoadedModel
from retouch.train.finetune import TUNES, Tune

ETA_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(17))  # 0.0, 0.1, ..., 1.6
ETA_RANGE = (0.0, 2.0)
DEFAULT_ETA = 0.7  # the paper finds 0.6 to 0.8 works for most edits
DEFAULT_SCHEDULER: SchedulerName = "ddim"  # deterministic steps: eta = 0 stays close to the input

ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray

__all__ = [
    "DEFAULT_ETA",
    "DEFAULT_SCHEDULER",
    "DEFAULT_STEPS",
    "ETA_GRID",
    "ETA_RANGE",
    "TUNES",
    "ImagicConfig",
    "ImagicResult",
    "SweepSample",
    "imagic",
    "imagic_config",
    "interpolate_embeddings",
]


def imagic(
    model: LoadedModel | StableDiffusionPipeline,
    image: ImageInput,
    target: str,
    *,
    eta: float | Literal["auto"] = DEFAULT_ETA,
    seed: int | None = None,
    region: ImagicRegionChoice = "auto",
    tune: Tune = "lora",
    embed_steps: int | None = None,
    tune_steps: int | None = None,
    lr_embed: float | None = None,
    lr_tune: float | None = None,
    lora_rank: int | None = None,
    batch_size: int | None = None,
    train_seed: int = 0,
    steps: int = DEFAULT_STEPS,
    guidance_scale: float | None = None,
    scheduler: SchedulerName = DEFAULT_SCHEDULER,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    judge: JudgeSpec = None,
    source: str | None = None,
    seeds: int = 1,
    tries: int | Literal["auto"] = "auto",
    eta_grid: Sequence[float] = ETA_GRID,
    lpips_weights: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    gradient_checkpointing: bool | None = None,
    progress: bool = False,
) -> ImagicResult:
    """Edit ``image`` towards ``target`` (a caption of the wanted picture) with Imagic.

    Args:
        model: a ``LoadedModel`` from ``load_model``, or a bare diffusers pipeline.
        image: a file path (recorded in the recipe, so the edit replays), a PIL image or an array.
        eta: the weight of ``e_tgt`` in [0, 2] (0 reconstructs the input, 1 is the target text), or
            ``"auto"``: sweep ``eta_grid`` x ``seeds`` seeds, take the best accepted picture
            (``imagic_report.choose``; preservation: 1 - LPIPS with ``lpips_weights``, else PSNR).
        seed: the sampling seed (the first of ``seeds``); random (and recorded) when None.
        tries: ``eta="auto"``: sweeps from the next seeds while the judge accepts none, at most
            this many (``"auto"``: ``edit.tries.resolve_tries``, 3 where an oracle judges, else 1).
        region: what stage C redraws: ``auto`` decides object or background from a DiffEdit map of
            ``e_opt`` against ``e_tgt`` (and the captions) and keeps the input elsewhere;
            ``foreground`` or ``background`` names it; ``global``: the whole picture (the paper's).
        tune ... train_seed: stages A and B (``ImagicConfig``; ``None``: sized to the model).
        cache_dir, use_cache: where A and B are cached (``~/.cache/retouch/imagic``); False: nowhere.
        judge, source: for ``eta="auto"``, see ``retouch.edit.judge.make_judge`` (``source``, a
            caption of the input, also weighs in on the region).
        gradient_checkpointing: trade compute for memory in A and B (same results). Default: on,
            except for small models on CPU, where recomputing activations would only cost time.

    Raises:
        RetouchError: bad input, or ``eta="auto"`` without a usable judge.
    """
    loaded = model if isinstance(model, LoadedModel) else LoadedModel(model, pipe_name(model), "pipeline")
    started, seed = time.perf_counter(), random_seed() if seed is None else seed
    check_generate_arguments(eta, seed, seeds, steps, eta_grid)
    check_tries(tries)
    check_number("guidance_scale", loaded.guidance_scale(guidance_scale))
    config = imagic_config(loaded.pipe, tune, embed_steps=embed_steps, tune_steps=tune_steps, lr_embed=lr_embed,
                           lr_tune=lr_tune, lora_rank=lora_rank, batch_size=batch_size, train_seed=train_seed)
    run = _prepare(loaded, config, image, target, cache_dir, use_cache, gradient_checkpointing, progress, started)
    auto = eta == "auto"
    judge_fn, judge_name = make_named_judge(judge, source, target, loaded.device, run.pixels) if auto else (None, None)
    lpips = _lpips_for_preservation(lpips_weights, run.pipe.device)
    sampling = Sampling(steps=steps, guidance_scale=loaded.guidance_scale(guidance_scale), scheduler=scheduler)
    optimized, embed_meta = stage_a(run)
    local = stage_c_region(run, optimized, region, source)
    rounds = resolve_tries(tries, judge, target, run.pixels) if auto else 1
    with stage_b(run, optimized, embed_meta["loss_after"]) as (unet, tune_meta):
        sweep = partial(stage_c, run, unet, optimized, local, sampling=sampling, judge=judge_fn, lpips_model=lpips)
        samples: list[SweepSample] = []
        for drawn in range(1, rounds + 1):  # another sweep, from the next seeds, only while none is accepted
            samples += sweep(*sweep_points(eta, eta_grid, seed + (drawn - 1) * seeds, seeds))
            if any(s.scores.get("accepted") for s in samples):
                break
    stages = {"embed": embed_meta, "tune": tune_meta}
    result = imagic_result(run, samples, auto, local, region, sampling, stages, judge_name, lpips is not None)
    result.report["tries"] = {"allowed": rounds, "drawn": drawn} if auto else None
    return result


def _prepare(
    loaded: LoadedModel,
    config: ImagicConfig,
    image: ImageInput,
    target: str,
    cache_dir: str | os.PathLike[str] | None,
    use_cache: bool,
    gradient_checkpointing: bool | None,
    progress: bool,
    started: float,
) -> ImagicRun:
    """Check what needs the model, read the picture and pad it to the model's multiple (cropped
    back after sampling), encode it and the target caption, key the cache."""
    if config.tune == "lora" and any(record["kind"] == "lora" for record in loaded.adapters):
        raise RetouchError("Imagic's --tune lora trains a LoRA of its own beside none other; with a LoRA "
                           "applied (--lora, a LoRA concept) pass --tune full")
    cache = ImagicCache((cache_dir or default_cache_dir()) if use_cache else None)
    named_cache = cache_dir is not None and use_cache
    pipe = loaded.pipe
    if config.tune == "full" and pipe.unet.dtype != torch.float32:
        raise RetouchError("--tune full trains every UNet weight and needs float32 weights; load with --dtype float32")
    warn_if_truncated(pipe.tokenizer, prompt_text(target), "target caption")
    warn_if_unknown_tokens(pipe.tokenizer, target, "target caption")
    is_file = isinstance(image, str | os.PathLike)
    source_input = read_input_image(image) if is_file else _as_input(image)
    padded, _ = pad_to_multiple(np.asarray(source_input.image), pixel_multiple(pipe))  # (H', W', 3)
    if gradient_checkpointing is None:
        gradient_checkpointing = pipe.device.type == "cuda" or not is_small(pipe)
    return prepare_run(
        loaded,
        config,
        target,
        source_input,
        padded,
        cache,
        gradient_checkpointing=gradient_checkpointing,
        progress=progress,
        image_path=str(Path(image).resolve()) if is_file else None,
        recipe_cache=str(Path(cache_dir).expanduser().resolve()) if named_cache else None,
        started=started,
    )


def sweep_points(eta: float | str, eta_grid: Sequence[float], seed: int, seeds: int) -> tuple[list[float], list[int]]:
    """The etas and seeds stage C samples: ``eta_grid`` x ``seeds`` seeds from ``seed`` (wrapping
    past ``MAX_SEED``) for ``eta="auto"``, else the one eta and seed."""
    if eta == "auto":
        return [float(e) for e in eta_grid], [(seed + k) % (MAX_SEED + 1) for k in range(seeds)]
    return [float(eta)], [seed]


def _lpips_for_preservation(
    weights: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None, device: torch.device
) -> torch.nn.Module | None:
    """LPIPS when ``weights`` are given (errors if unusable) or found in the metrics folder."""
    from retouch.metrics.lpips import default_lpips_paths, load_lpips

    if weights is None and not default_lpips_paths():
        return None
    return load_lpips(weights, device)


def _as_input(image: Image.Image | np.ndarray) -> InputImage:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise RetouchError(f"image must be a file path, a PIL image or an array, got {type(image).__name__}")
    return to_rgb(image)


def check_generate_arguments(eta: float | str, seed: int, seeds: int, steps: int, eta_grid: Sequence[float]) -> None:
    """Errors on an eta outside ``ETA_RANGE`` (or ``"auto"`` with an empty grid), a seed range past
    ``MAX_SEED`` or fewer than one step or seed."""
    if eta != "auto":
        if isinstance(eta, bool) or not isinstance(eta, int | float) or not ETA_RANGE[0] <= eta <= ETA_RANGE[1]:
            raise RetouchError(f"eta must be a number in [{ETA_RANGE[0]}, {ETA_RANGE[1]}] or 'auto', got {eta!r}")
    elif not eta_grid:
        raise RetouchError("eta auto needs a non-empty eta grid")
    check_numbers({"seeds": seeds, "steps": steps})
    if not 0 <= seed <= MAX_SEED - seeds:
        raise RetouchError(f"seed must be between 0 and {MAX_SEED - seeds}, got {seed}")
    for value in eta_grid if eta == "auto" else ():
        check_number("eta", value)
