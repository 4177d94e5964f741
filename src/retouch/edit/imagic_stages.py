"""Imagic's stages A and B, and their cached runs.

A. Optimize the target caption's embedding ``e_tgt`` (1, tokens, dim) with the model frozen, on
   the diffusion loss over the picture: ``e_opt`` (Kawar et al. 2022, eq. 2).
B. Fine-tune the UNet on the picture conditioned on ``e_opt`` (eq. 3): LoRA adapters or all weights.

The training itself is ``retouch.train.finetune``'s; this module sizes it (``imagic_config``) and
caches each stage's result (``retouch.edit.imagic_cache``), so other eta values and seeds cost
only sampling (stage C, ``retouch.edit.imagic_sample``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from retouch.core.latents import encode, text_embeddings
from retouch.core.limits import check_numbers
from retouch.core.weighting import encode_if_weighted
from retouch.edit.imagic_cache import ImagicCache, model_fingerprint, stage_key
from retouch.errors import RetouchError
from retouch.io.convert import InputImage
from retouch.io.hashing import pixels_sha256
from retouch.models.loading import LoadedModel
from retouch.train import finetune
from retouch.train.finetune import TUNES, Tune

ADAPTER = "imagic"  # the LoRA adapter's name (its cached weights are keyed without it)
SMALL_MODEL_PX = 128  # models that draw at most this many pixels a side get the small defaults
EMBED_FIELDS = ("embed_steps", "lr_embed", "batch_size", "train_seed")  # what stage A depends on


@dataclass(frozen=True)
class ImagicConfig:
    """Stages A and B. Every field is part of the cache key; ``imagic_config`` sizes them to a model."""

    tune: Tune = "lora"  # stage B: LoRA adapters or the whole UNet
    embed_steps: int = 150  # stage A: Adam steps on the embedding
    tune_steps: int = 0  # stage B: steps on the UNet (1000 for SD-sized models, see imagic_config)
    lr_embed: float = 1e-3  # the paper's
    lr_tune: float = 1e-3
    lora_rank: int = 8
    batch_size: int = 4  # (timestep, noise) draws per step
    train_seed: int = 0  # seeds A's and B's draws and the LoRA init; the sampling seed is separate


def is_small(pipe: StableDiffusionPipeline) -> bool:
    """The model draws at most ``SMALL_MODEL_PX`` a side (the bundled 64 x 64 one)."""
    return pipe.unet.config.sample_size * pipe.vae_scale_factor <= SMALL_MODEL_PX


def imagic_config(pipe: StableDiffusionPipeline, tune: Tune = "lora", **overrides: Any) -> ImagicConfig:
    """Defaults sized to the model, then ``overrides`` (``None`` values ignored).

    Small models (the 64 x 64 bundled one): 150 embedding steps of 4 draws and no tuning steps
    (LoRA lr 1e-3, full 1e-4, when asked for with ``tune_steps``): stage C only redraws the masked
    region, which keeps the input elsewhere, and every tuning step makes the bundled model redraw
    the input inside it whatever the embedding says, so fewer edits take (10 steps: 61% of 18
    benchmark edits, none: 94%; docs/benchmarks.md).
    Larger (SD-sized): 500 + 1000 steps of 1 draw, LoRA lr 1e-4 (full 2e-6), the step counts and
    full-tuning rate of diffusers' community Imagic pipeline.
    """
    if tune not in TUNES:
        raise RetouchError(f"unknown tune {tune!r}; choose one of: {', '.join(TUNES)}")
    small = is_small(pipe)
    defaults = {
        "embed_steps": 150 if small else 500,
        "tune_steps": 0 if small else 1000,
        "lr_tune": (1e-3 if small else 1e-4) if tune == "lora" else (1e-4 if small else 2e-6),
        "batch_size": 4 if small else 1,
    }
    config = ImagicConfig(tune=tune, **{**defaults, **{k: v for k, v in overrides.items() if v is not None}})
    for name in ("embed_steps", "tune_steps"):
        if getattr(config, name) < 0:
            raise RetouchError(f"{name} must be at least 0, got {getattr(config, name)}")
    for name in ("lora_rank", "batch_size"):
        if getattr(config, name) < 1:
            raise RetouchError(f"{name} must be at least 1, got {getattr(config, name)}")
    for name in ("lr_embed", "lr_tune"):
        if not getattr(config, name) > 0:
            raise RetouchError(f"{name} must be positive, got {getattr(config, name)}")
    check_numbers(asdict(config))
    return config


def optimize_embedding(
    unet: UNet2DConditionModel,
    noise_scheduler: DDPMScheduler,
    latents: torch.Tensor,
    target_embeds: torch.Tensor,
    config: ImagicConfig,
    progress: bool = False,
    gradient_checkpointing: bool = True,
) -> tuple[torch.Tensor, list[float]]:
    """Stage A (eq. 2): Adam on a copy of ``target_embeds`` (1, tokens, dim), the UNet frozen.
    Returns the optimized embedding (float32) and the loss of every step."""
    embedding = target_embeds.detach().float().clone().requires_grad_(True)  # (1, tokens, dim)
    optimizer = torch.optim.Adam([embedding], lr=config.lr_embed)
    losses = finetune.train_on_latents(
        unet,
        noise_scheduler,
        latents,
        embedding,
        [],
        optimizer,
        steps=config.embed_steps,
        batch_size=config.batch_size,
        seed=config.train_seed,
        desc="embed",
        progress=progress,
        checkpointing=gradient_checkpointing,
    )
    return embedding.detach(), losses


def tune_unet(
    unet: UNet2DConditionModel,
    noise_scheduler: DDPMScheduler,
    latents: torch.Tensor,
    embedding: torch.Tensor,
    config: ImagicConfig,
    progress: bool = False,
    gradient_checkpointing: bool = True,
) -> tuple[list[float], str]:
    """Stage B (eq. 3): train ``unet``'s LoRA adapters (``config.tune == "lora"``, see
    ``imagic_unet``) or all its weights in place, conditioned on the optimized ``embedding``.
    Returns the loss of every step and the optimizer's name."""
    params = finetune.lora_parameters(unet) if config.tune == "lora" else list(unet.parameters())
    if not params:
        raise RetouchError("tune lora: the UNet has no LoRA adapters; add them first (imagic_unet)")
    optimizer = finetune.make_optimizer(params, config.lr_tune, unet.device)
    losses = finetune.train_on_latents(
        unet,
        noise_scheduler,
        latents,
        embedding.detach(),
        params,
        optimizer,
        steps=config.tune_steps,
        batch_size=config.batch_size,
        seed=config.train_seed + 1,
        desc="tune",
        progress=progress,
        checkpointing=gradient_checkpointing,
    )
    return losses, type(optimizer).__name__


def imagic_unet(
    pipe: StableDiffusionPipeline, config: ImagicConfig, state: dict[str, torch.Tensor] | None = None
) -> AbstractContextManager[UNet2DConditionModel]:
    """``finetune.tuned_unet`` for ``config``: the UNet stage B trains (``state`` None) or
    restores (``state`` from the cache); the pipeline is as it was on exit."""
    return finetune.tuned_unet(
        pipe, config.tune, lora_rank=config.lora_rank, seed=config.train_seed, adapter_name=ADAPTER, state=state
    )


@dataclass
class ImagicRun:
    """What the stages share: the picture (as given and padded), its latents, the target's
    embedding, the training schedule and the cache with this run's keys."""

    loaded: LoadedModel
    config: ImagicConfig
    target: str
    source_input: InputImage
    pixels: np.ndarray  # (H, W, 3) uint8: the input
    padded: np.ndarray  # (H', W', 3) uint8: padded to the model's multiple, cropped back after sampling
    latents: torch.Tensor  # (1, 4, h, w)
    target_embeds: torch.Tensor  # (1, tokens, dim) float32: e_tgt
    noise_scheduler: DDPMScheduler
    cache: ImagicCache
    embed_key: str
    tune_key: str
    gradient_checkpointing: bool
    progress: bool
    image_path: str | None = None  # the input's file, resolved (recorded in the recipe), or None
    recipe_cache: str | None = None  # the cache folder the caller named (recorded in the recipe)
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)  # embed_s, tune_s, sample_s, total_s

    @property
    def pipe(self) -> StableDiffusionPipeline:
        return self.loaded.pipe


def prepare_run(
    loaded: LoadedModel,
    config: ImagicConfig,
    target: str,
    source_input: InputImage,
    padded: np.ndarray,
    cache: ImagicCache,
    *,
    gradient_checkpointing: bool,
    progress: bool,
    image_path: str | None = None,
    recipe_cache: str | None = None,
    started: float | None = None,
) -> ImagicRun:
    """Encode the picture and the target caption (A1111 weights honoured), and key the cache on
    everything a stage's result depends on."""
    pipe = loaded.pipe
    latents = encode(pipe, padded)  # (1, 4, h, w)
    target_embeds = encode_if_weighted(pipe, target)
    if target_embeds is None:
        target_embeds, _ = text_embeddings(pipe, target, 1.0)  # (1, tokens, dim)
    base_key = {
        "image": pixels_sha256(padded),
        "target": target,
        "model": loaded.name,
        "model_fingerprint": model_fingerprint(pipe),
        "dtype": str(pipe.unet.dtype),
        **({"adapters": [record["sha256"] for record in loaded.adapters]} if loaded.adapters else {}),
    }
    embed_key = stage_key({**base_key, **{k: getattr(config, k) for k in EMBED_FIELDS}})
    return ImagicRun(
        loaded=loaded,
        config=config,
        target=target,
        source_input=source_input,
        pixels=np.asarray(source_input.image),
        padded=padded,
        latents=latents,
        target_embeds=target_embeds.float(),
        noise_scheduler=finetune.training_scheduler(pipe),
        cache=cache,
        embed_key=embed_key,
        tune_key=stage_key({"embed_key": embed_key, **asdict(config)}),
        gradient_checkpointing=gradient_checkpointing,
        progress=progress,
        image_path=image_path,
        recipe_cache=recipe_cache,
        started=time.perf_counter() if started is None else started,
    )


def measured_loss(run: ImagicRun, unet: UNet2DConditionModel, embeds: torch.Tensor) -> float:
    """The reconstruction loss the report gives before and after each stage: at fixed draws
    (seeded by ``train_seed + 2``), so the figures compare."""
    return finetune.reconstruction_loss(unet, run.noise_scheduler, run.latents, embeds, run.config.train_seed + 2)


def stage_a(run: ImagicRun) -> tuple[torch.Tensor, dict[str, Any]]:
    """Stage A, from the cache when it is there: (e_opt (1, tokens, dim) float32, its report)."""
    pipe, config, start = run.pipe, run.config, time.perf_counter()
    cached = run.cache.load("embed", run.embed_key)
    if cached is not None:
        run.timings["embed_s"] = time.perf_counter() - start
        return cached[0]["optimized"].to(pipe.device), {**cached[1], "cached": True}
    loss_before = measured_loss(run, pipe.unet, run.target_embeds)
    optimized, losses = optimize_embedding(
        pipe.unet,
        run.noise_scheduler,
        run.latents,
        run.target_embeds,
        config,
        progress=run.progress,
        gradient_checkpointing=run.gradient_checkpointing,
    )
    meta = {
        "steps": config.embed_steps,
        "lr": config.lr_embed,
        "loss_before": loss_before,
        "loss_after": measured_loss(run, pipe.unet, optimized),
        "losses": losses,
        "seconds": time.perf_counter() - start,
    }
    run.cache.save("embed", run.embed_key, {"optimized": optimized}, meta)
    run.timings["embed_s"] = time.perf_counter() - start
    return optimized, {**meta, "cached": False}


@contextmanager
def stage_b(run: ImagicRun, optimized: torch.Tensor, loss_before: float) -> Iterator[tuple[UNet2DConditionModel, dict]]:
    """Stage B, from the cache when it is there: the tuned UNet (for stage C, inside the
    ``with``; the pipeline's own UNet is as it was after it) and its report."""
    config, start = run.config, time.perf_counter()
    cached = run.cache.load("tune", run.tune_key)
    with imagic_unet(run.pipe, config, cached[0] if cached else None) as unet:
        if cached is not None:
            run.timings["tune_s"] = time.perf_counter() - start
            yield unet, {**cached[1], "cached": True}
            return
        losses, optimizer_name = tune_unet(
            unet, run.noise_scheduler, run.latents, optimized, config, run.progress, run.gradient_checkpointing
        )
        meta = {
            "tune": config.tune,
            "steps": config.tune_steps,
            "lr": config.lr_tune,
            "optimizer": optimizer_name,
            "loss_before": loss_before,
            "loss_after": measured_loss(run, unet, optimized),
            "losses": losses,
            "seconds": time.perf_counter() - start,
        }
        weights = finetune.lora_state_dict(unet, ADAPTER) if config.tune == "lora" else unet.state_dict()
        run.cache.save("tune", run.tune_key, weights, meta)
        run.timings["tune_s"] = time.perf_counter() - start
        yield unet, {**meta, "cached": False}
