"""Imagic (Kawar et al. 2022, "Imagic: Text-Based Real Image Editing with Diffusion Models"):
edit a real picture from a single target caption.

A. Optimize the target caption's embedding ``e_tgt`` (the text encoder's last hidden states,
   (1, tokens, dim)) with the model frozen, on the standard diffusion loss over the picture, so
   that the model reconstructs the picture from it: ``e_opt`` (paper, eq. 2).
B. Fine-tune the UNet on the picture conditioned on ``e_opt`` (eq. 3): LoRA adapters through peft
   (the default, as diffusers' ``train_text_to_image_lora``) or the whole UNet.
C. Sample with the tuned UNet from ``e = eta * e_tgt + (1 - eta) * e_opt`` (eq. 4), with
   classifier-free guidance. ``eta="auto"`` sweeps a grid (and seeds) and takes the smallest eta
   whose picture a judge accepts, ties broken by how well the input is kept.

By default stage C redraws only the region the edit touches (``retouch.edit.imagic_region``: a
DiffEdit map between ``e_opt`` and ``e_tgt``, Blended Latent Diffusion inside it) and keeps the
input elsewhere; ``region="global"`` samples the whole picture, as the paper does.

A and B are cached on disk (``retouch.edit.imagic_cache``), so other eta values and seeds cost
only sampling. Training uses gradient checkpointing (not for small models on CPU, where it would
only cost time), and on CUDA mixed precision and 8-bit Adam (when bitsandbytes is installed).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image
from tqdm.auto import tqdm

from retouch.core.components import pipe_name
from retouch.core.generate import generate
from retouch.core.latents import encode, pixel_multiple, text_embeddings
from retouch.core.prompts import warn_if_truncated
from retouch.core.schedulers import DEFAULT_STEPS, SchedulerName
from retouch.core.seeding import MAX_SEED, random_seed
from retouch.core.weighting import encode_if_weighted, prompt_text
from retouch.edit.imagic_cache import ImagicCache, default_cache_dir, model_fingerprint, stage_key
from retouch.edit.imagic_region import ImagicRegionChoice, LocalRegion, find_region, sample_in_region
from retouch.edit.judge import clip_judge, oracle_judge
from retouch.edit.layer import mask_image
from retouch.edit.strength import Judge
from retouch.errors import RetouchError
from retouch.io.atomic import atomic_write_json
from retouch.io.convert import InputImage, pad_to_multiple, read_input_image, to_rgb
from retouch.io.hashing import pixels_sha256
from retouch.io.png import save_png
from retouch.metrics.masked import masked_psnr, masked_ssim
from retouch.metrics.report import json_safe
from retouch.models.loading import LoadedModel
from retouch.version import __version__
from retouch.worlds.shapes64 import parse_caption

Tune = Literal["lora", "full"]
TUNES: tuple[str, ...] = ("lora", "full")
ETA_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(17))  # 0.0, 0.1, ..., 1.6
ETA_RANGE = (0.0, 2.0)
DEFAULT_ETA = 0.7  # the paper finds 0.6 to 0.8 works for most edits
DEFAULT_SCHEDULER: SchedulerName = "ddim"  # deterministic steps: eta = 0 stays close to the input
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # diffusers' train_text_to_image_lora
ADAPTER = "imagic"
SMALL_MODEL_PX = 128  # models that draw at most this many pixels a side get the small defaults
EVAL_DRAWS = 8  # fixed (timestep, noise) draws on which the report measures each stage's loss
DEFAULT_CLIP_GAIN = 0.05  # CLIP judge without a source caption: cosine gain over the input to accept

ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray


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
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    small = side <= SMALL_MODEL_PX
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
    return config


# ---------------------------------------------------------------------------------------------
# Training pieces, shared by stages A and B (and benchmarks/bench_imagic_memory.py).


def training_scheduler(pipe: StableDiffusionPipeline) -> DDPMScheduler:
    """The forward process the model was trained with (its betas), for ``add_noise``."""
    return DDPMScheduler.from_config(pipe.scheduler.config)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA (bfloat16 where supported, else float16); none on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def diffusion_loss(
    unet: UNet2DConditionModel,
    noise_scheduler: DDPMScheduler,
    latents: torch.Tensor,
    embeds: torch.Tensor,
    generator: torch.Generator,
    batch_size: int = 1,
) -> torch.Tensor:
    """The denoising loss (Ho et al. 2020, eq. 14) of ``latents`` (1, 4, h, w) under ``embeds``
    (1, tokens, dim), at ``batch_size`` random timesteps and noises drawn from ``generator``."""
    device, dtype = latents.device, unet.dtype
    x0 = latents.float().expand(batch_size, -1, -1, -1)  # (batch, 4, h, w)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator).to(device)
    noisy = noise_scheduler.add_noise(x0, noise, t)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(x0, noise, t)
    else:
        target = noise
    amp = autocast_dtype(device)
    with torch.autocast(device.type, dtype=amp) if amp else nullcontext():
        cond = embeds.expand(batch_size, -1, -1).to(dtype)  # (batch, tokens, dim)
        prediction = unet(noisy.to(dtype), t, encoder_hidden_states=cond).sample
    return F.mse_loss(prediction.float(), target.float())


@torch.no_grad()
def reconstruction_loss(
    unet: UNet2DConditionModel,
    noise_scheduler: DDPMScheduler,
    latents: torch.Tensor,
    embeds: torch.Tensor,
    seed: int,
    draws: int = EVAL_DRAWS,
) -> float:
    """``diffusion_loss`` at fixed draws: comparable before and after a stage."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return float(diffusion_loss(unet, noise_scheduler, latents, embeds, generator, draws))


@contextmanager
def training_mode(
    unet: UNet2DConditionModel, trainable: Sequence[torch.nn.Parameter], checkpointing: bool = True
) -> Iterator[None]:
    """Only ``trainable`` gets gradients, with gradient checkpointing on when asked; the UNet's
    requires_grad flags, train/eval mode and checkpointing are restored on exit."""
    flags = [(p, p.requires_grad) for p in unet.parameters()]
    was_training, was_checkpointing = unet.training, unet.is_gradient_checkpointing
    unet.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train(bool(trainable))
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        unet.train(was_training)
        if checkpointing and not was_checkpointing:
            unet.disable_gradient_checkpointing()


def make_optimizer(params: Sequence[torch.nn.Parameter], lr: float, device: torch.device) -> torch.optim.Optimizer:
    """8-bit Adam (bitsandbytes) on CUDA when installed, else torch's Adam."""
    if device.type == "cuda":
        try:
            import bitsandbytes as bnb

            return bnb.optim.Adam8bit(params, lr=lr)
        except ImportError:
            pass
    return torch.optim.Adam(params, lr=lr)


def _train(
    unet: UNet2DConditionModel,
    trainable: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[], torch.Tensor],
    steps: int,
    desc: str,
    progress: bool,
    checkpointing: bool,
) -> list[float]:
    """``steps`` optimizer steps on ``loss_fn``; ``trainable`` are the UNet's weights that learn
    (none in stage A, where the embedding does). Returns every step's loss."""
    scaler = torch.amp.GradScaler(unet.device.type, enabled=autocast_dtype(unet.device) == torch.float16)
    losses = []
    with training_mode(unet, trainable, checkpointing):
        for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
            loss = loss_fn()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
    return losses


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
    generator = torch.Generator("cpu").manual_seed(config.train_seed)
    losses = _train(
        unet, [], optimizer,
        lambda: diffusion_loss(unet, noise_scheduler, latents, embedding, generator, config.batch_size),
        config.embed_steps, "embed", progress, gradient_checkpointing,
    )  # fmt: skip
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
    ``add_lora``) or all its weights in place, conditioned on the optimized ``embedding``.
    Returns the loss of every step and the optimizer's name."""
    params = lora_parameters(unet) if config.tune == "lora" else list(unet.parameters())
    if not params:
        raise RetouchError("tune lora: the UNet has no LoRA adapters; call add_lora first")
    optimizer = make_optimizer(params, config.lr_tune, unet.device)
    generator = torch.Generator("cpu").manual_seed(config.train_seed + 1)
    embedding = embedding.detach()
    losses = _train(
        unet, params, optimizer,
        lambda: diffusion_loss(unet, noise_scheduler, latents, embedding, generator, config.batch_size),
        config.tune_steps, "tune", progress, gradient_checkpointing,
    )  # fmt: skip
    return losses, type(optimizer).__name__


def add_lora(unet: UNet2DConditionModel, rank: int, seed: int) -> None:
    """Add the ``imagic`` LoRA adapter (peft) to the attention projections, its random init seeded."""
    from peft import LoraConfig

    if getattr(unet, "peft_config", None):
        raise RetouchError(
            "the model's UNet already carries LoRA adapters; Imagic adds its own. Load the model without them"
        )
    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
    with torch.random.fork_rng(devices=[]):  # the init draws from the global RNG: seed it, leave it be
        torch.manual_seed(seed)
        unet.add_adapter(config, adapter_name=ADAPTER)
    for p in lora_parameters(unet):
        p.data = p.data.float()  # adapters train (and are cached) in float32, over any weights' dtype


def lora_parameters(unet: UNet2DConditionModel) -> list[torch.nn.Parameter]:
    return [p for name, p in unet.named_parameters() if ".lora_" in name]


def lora_state_dict(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(unet, adapter_name=ADAPTER).items()}


@contextmanager
def tuned_unet(
    pipe: StableDiffusionPipeline, config: ImagicConfig, state: dict[str, torch.Tensor] | None = None
) -> Iterator[UNet2DConditionModel]:
    """The UNet stage B trains (``state`` None) or restores (``state`` from the cache): the
    pipeline's own UNet with the LoRA adapter, removed again on exit, or a full copy."""
    if config.tune == "full":
        tuned = copy.deepcopy(pipe.unet)
        if state is not None:
            tuned.load_state_dict(state)
        yield tuned
        return
    add_lora(pipe.unet, config.lora_rank, config.train_seed)
    try:
        if state is not None:
            from peft.utils import set_peft_model_state_dict

            result = set_peft_model_state_dict(pipe.unet, state, adapter_name=ADAPTER)
            unexpected = getattr(result, "unexpected_keys", None)
            if unexpected:
                raise RetouchError(f"the cached LoRA weights do not fit this UNet ({unexpected[:3]} ...)")
        yield pipe.unet
    finally:
        pipe.unet.unload_lora()


def interpolate_embeddings(target: torch.Tensor, optimized: torch.Tensor, eta: float) -> torch.Tensor:
    """e = eta * e_tgt + (1 - eta) * e_opt (eq. 4); eta > 1 extrapolates past the target."""
    return eta * target + (1.0 - eta) * optimized


# ---------------------------------------------------------------------------------------------
# The method.


@dataclass
class SweepSample:
    eta: float
    seed: int
    image: Image.Image  # the input's size
    scores: dict[str, Any]  # judge_score, accepted, psnr, ssim, lpips, preservation
    mask: np.ndarray | None = None  # (H, W) bool: the region redrawn (None: the whole picture)

    def to_dict(self) -> dict[str, Any]:
        return {"eta": self.eta, "seed": self.seed, **self.scores}


@dataclass
class ImagicResult:
    image: Image.Image  # RGB, the input's size
    report: dict[str, Any]  # stages (losses, cache), sweep, choice, metrics, timings
    recipe: dict[str, Any]  # task "imagic": replays this picture bit for bit
    sweep: list[SweepSample] = field(default_factory=list)  # every picture sampled, the chosen one included
    mask: Image.Image | None = None  # L, 255 = redrawn; None when the whole picture was sampled

    def sample_recipe(self, sample: SweepSample) -> dict[str, Any]:
        return {**self.recipe, "eta": sample.eta, "seed": sample.seed}

    def save(self, path: str | os.PathLike[str], sweep_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
        """Write ``PATH.png`` (with its recipe), ``PATH.mask.png`` (the region redrawn, when not the
        whole picture) and the report ``PATH.json`` atomically; with ``sweep_dir``, every sampled
        picture too, as ``eta{eta}_seed{seed}.png``, each replayable."""
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise RetouchError(f"the output must be a .png file (it carries the recipe), got {path}")
        targets = {"image": path, "report": path.with_suffix(".json")}
        if self.mask is not None:
            targets["mask"] = path.with_suffix(".mask.png")
        if self.recipe.get("image") and Path(self.recipe["image"]).resolve() in {p.resolve() for p in targets.values()}:
            raise RetouchError(f"refusing to overwrite the input {self.recipe['image']}; choose another --output")
        report = dict(self.report)
        if sweep_dir is not None:
            sweep_dir = Path(sweep_dir)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            rows = []
            for sample in self.sweep:
                file = sweep_dir / f"eta{sample.eta:.2f}_seed{sample.seed}.png"
                save_png(sample.image, file, self.sample_recipe(sample))
                rows.append({**sample.to_dict(), "file": str(file)})
            report["sweep"] = rows
            targets["sweep"] = sweep_dir
        save_png(self.image, targets["image"], self.recipe)
        if self.mask is not None:
            save_png(self.mask, targets["mask"], {**self.recipe, "output": "mask"})
        atomic_write_json(targets["report"], json_safe(report))
        return targets


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
    judge: str | os.PathLike[str] | Judge | None = None,
    source: str | None = None,
    seeds: int = 1,
    eta_grid: Sequence[float] = ETA_GRID,
    lpips_weights: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    gradient_checkpointing: bool | None = None,
    progress: bool = False,
) -> ImagicResult:
    """Edit ``image`` towards ``target`` (a caption of the wanted picture) with Imagic.

    Args:
        model: a ``LoadedModel`` from ``load_model``, or a bare diffusers pipeline.
        image: a file path (recorded in the recipe, so the edit replays), a PIL image or an array.
        eta: the interpolation weight in [0, 2] (0 reconstructs the input, 1 is the target text),
            or ``"auto"``: sweep ``eta_grid`` x ``seeds`` seeds and take the smallest eta the judge
            accepts, ties broken by preservation (1 - LPIPS when LPIPS weights are found, else PSNR).
        seed: the sampling seed (the first of ``seeds``); random (and recorded) when None.
        region: what stage C redraws: ``auto`` decides between the object (foreground) and the
            rest (background) from a DiffEdit map of ``e_opt`` against ``e_tgt`` (and the captions,
            when ``source`` is given) and keeps the input elsewhere; ``foreground`` or
            ``background`` names it; ``global`` samples the whole picture (the paper's Imagic).
        tune, embed_steps, tune_steps, lr_embed, lr_tune, lora_rank, batch_size, train_seed: stages A
            and B (see ``ImagicConfig``); ``None`` takes the model-sized default (``imagic_config``).
        cache_dir: where stages A and B are cached (default ``~/.cache/retouch/imagic``).
        use_cache: False recomputes A and B and keeps nothing.
        source: a caption of the input (optional): weighs in on the region, and a CLIP judge
            accepts a picture closer to ``target`` than to it.
        judge: for ``eta="auto"``: a function ``image -> (score, accepted)``, ``"oracle"``
            (shapes-64; the default for a canonical target caption), or a CLIP folder (default: the
            bundled shapes-64 CLIP when installed). CLIP accepts a picture closer to ``target`` than
            to ``source``; without ``source``, one that gained ``DEFAULT_CLIP_GAIN`` over the input.
        lpips_weights: LPIPS network file(s) for preservation (default: the metrics folder's, if any).
        gradient_checkpointing: trade compute for memory in A and B (results are the same either
            way). Default: on, except for small models on CPU, whose activations are tiny and
            where recomputing them would only cost time.

    Raises:
        RetouchError: bad input, or ``eta="auto"`` without a usable judge.
    """
    start = time.perf_counter()
    loaded = model if isinstance(model, LoadedModel) else LoadedModel(model, pipe_name(model), "pipeline")
    pipe = loaded.pipe
    guidance_scale = loaded.guidance_scale(guidance_scale)
    seed = random_seed() if seed is None else seed
    check_generate_arguments(eta, seed, seeds, steps, eta_grid)
    config = imagic_config(
        pipe, tune, embed_steps=embed_steps, tune_steps=tune_steps, lr_embed=lr_embed, lr_tune=lr_tune,
        lora_rank=lora_rank, batch_size=batch_size, train_seed=train_seed,
    )  # fmt: skip
    if config.tune == "full" and pipe.unet.dtype != torch.float32:
        raise RetouchError("--tune full trains every UNet weight and needs float32 weights; load with --dtype float32")
    warn_if_truncated(pipe.tokenizer, prompt_text(target), "target caption")
    source_input = read_input_image(image) if isinstance(image, str | os.PathLike) else _as_input(image)
    pixels = np.asarray(source_input.image)  # (H, W, 3) uint8
    height, width = pixels.shape[:2]
    padded, _ = pad_to_multiple(pixels, pixel_multiple(pipe))  # (H', W', 3), cropped back after sampling
    auto = eta == "auto"
    judge_fn, judge_name = _make_judge(judge, target, source, pixels, pipe.device) if auto else (None, None)
    lpips_model = _lpips_for_preservation(lpips_weights, pipe.device)
    if gradient_checkpointing is None:
        small = pipe.unet.config.sample_size * pipe.vae_scale_factor <= SMALL_MODEL_PX
        gradient_checkpointing = pipe.device.type == "cuda" or not small

    # Stages A and B, from the cache when they are there.
    latents = encode(pipe, padded)  # (1, 4, h, w)
    target_embeds = encode_if_weighted(pipe, target)
    if target_embeds is None:
        target_embeds, _ = text_embeddings(pipe, target, 1.0)  # (1, tokens, dim)
    target_embeds = target_embeds.float()
    noise_scheduler = training_scheduler(pipe)
    cache = ImagicCache((cache_dir or default_cache_dir()) if use_cache else None)
    base_key = {
        "image": pixels_sha256(padded),
        "target": target,
        "model": loaded.name,
        "model_fingerprint": model_fingerprint(pipe),
        "dtype": str(pipe.unet.dtype),
    }
    embed_fields = ("embed_steps", "lr_embed", "batch_size", "train_seed")
    embed_key = stage_key({**base_key, **{k: getattr(config, k) for k in embed_fields}})
    tune_key = stage_key({"embed_key": embed_key, **asdict(config)})

    stage_start = time.perf_counter()
    cached_embed = cache.load("embed", embed_key)
    if cached_embed is not None:
        optimized = cached_embed[0]["optimized"].to(pipe.device)
        embed_meta = {**cached_embed[1], "cached": True}
    else:
        loss_before = reconstruction_loss(pipe.unet, noise_scheduler, latents, target_embeds, train_seed + 2)
        optimized, losses = optimize_embedding(
            pipe.unet, noise_scheduler, latents, target_embeds, config, progress, gradient_checkpointing
        )
        embed_meta = {
            "steps": config.embed_steps,
            "lr": config.lr_embed,
            "loss_before": loss_before,
            "loss_after": reconstruction_loss(pipe.unet, noise_scheduler, latents, optimized, train_seed + 2),
            "losses": losses,
            "seconds": time.perf_counter() - stage_start,
        }
        cache.save("embed", embed_key, {"optimized": optimized}, embed_meta)
        embed_meta["cached"] = False
    embed_seconds = time.perf_counter() - stage_start
    # The region stage C redraws, from the model as stage A saw it (before any tuning).
    local = find_region(pipe, latents, optimized, target_embeds, padded, region, target, source, train_seed)
    negative = text_embeddings(pipe, "", guidance_scale)[1] if local is not None else None  # (1, tokens, dim)

    stage_start = time.perf_counter()
    cached_tune = cache.load("tune", tune_key)
    with tuned_unet(pipe, config, cached_tune[0] if cached_tune else None) as unet:
        if cached_tune is not None:
            tune_meta = {**cached_tune[1], "cached": True}
        else:
            losses, optimizer_name = tune_unet(
                unet, noise_scheduler, latents, optimized, config, progress, gradient_checkpointing
            )
            tune_meta = {
                "tune": config.tune,
                "steps": config.tune_steps,
                "lr": config.lr_tune,
                "optimizer": optimizer_name,
                "loss_before": embed_meta["loss_after"],
                "loss_after": reconstruction_loss(unet, noise_scheduler, latents, optimized, train_seed + 2),
                "losses": losses,
                "seconds": time.perf_counter() - stage_start,
            }
            weights = lora_state_dict(unet) if config.tune == "lora" else unet.state_dict()
            cache.save("tune", tune_key, weights, tune_meta)
            tune_meta["cached"] = False
        tune_seconds = time.perf_counter() - stage_start

        # Stage C: sample every (eta, seed) asked for.
        sample_start = time.perf_counter()
        sampler = pipe if unet is pipe.unet else StableDiffusionPipeline(
            **{**pipe.components, "unet": unet}, requires_safety_checker=False
        )
        etas = [float(e) for e in eta_grid] if auto else [float(eta)]
        sample_seeds = [seed + k for k in range(seeds)] if auto else [seed]
        samples = []
        for value in etas:
            conditioning = interpolate_embeddings(target_embeds, optimized, value).to(pipe.device, pipe.unet.dtype)
            for sample_seed in sample_seeds:
                picture, mask = _sample(
                    sampler, latents, local, conditioning, negative, padded, target, scheduler, steps,
                    guidance_scale, sample_seed, progress,
                )  # fmt: skip
                picture, mask = picture[:height, :width], None if mask is None else mask[:height, :width]
                scores = _scores(Image.fromarray(picture), pixels, judge_fn, lpips_model)
                samples.append(SweepSample(value, sample_seed, Image.fromarray(picture), scores, mask))
        sample_seconds = time.perf_counter() - sample_start

    chosen, choice = _choose(samples, auto)
    cache_status = _cache_status(cache, cached_embed is not None, cached_tune is not None)
    recipe = {
        "task": "imagic",
        "image": str(Path(image).resolve()) if isinstance(image, str | os.PathLike) else None,
        "image_sha256": pixels_sha256(pixels),
        "target": target,
        "prompt": target,  # for AUTOMATIC1111's parameters text; not read back
        "eta": chosen.eta,
        "seed": chosen.seed,
        "region": local.decision.region if local is not None else "global",
        **asdict(config),
        "steps": steps,
        "guidance_scale": guidance_scale,
        "scheduler": scheduler,
        "width": width,
        "height": height,
        "model": loaded.name,
        **({"model_config": loaded.config} if loaded.config else {}),
        **({"cache": str(Path(cache_dir).expanduser().resolve())} if cache_dir is not None and use_cache else {}),
        "retouch_version": __version__,
    }
    report = {
        "task": "imagic",
        "image": recipe["image"],
        "target": target,
        "eta": chosen.eta,
        "eta_mode": "auto" if auto else "fixed",
        "seed": chosen.seed,
        "cache": cache_status,
        "cache_dir": str(cache.root) if cache.root else None,
        "cache_keys": {"embed": embed_key, "tune": tune_key},
        "config": asdict(config),
        "training": {
            "device": str(pipe.device),
            "gradient_checkpointing": gradient_checkpointing,
            "mixed_precision": str(amp).removeprefix("torch.") if (amp := autocast_dtype(pipe.device)) else None,
        },
        "stages": {"embed": embed_meta, "tune": tune_meta},
        "region": _region_report(local, region, chosen.mask),
        "judge": judge_name,
        "preservation_metric": "1-lpips" if lpips_model is not None else "psnr",
        "sweep": [s.to_dict() for s in samples],
        "choice": choice,
        "metrics": {k: chosen.scores[k] for k in ("psnr", "ssim", "lpips") if k in chosen.scores},
        "input": {"width": width, "height": height, "mode": source_input.mode, "notes": source_input.notes,
                  "padded_to": [padded.shape[1], padded.shape[0]]},
        "timings": {"embed_s": embed_seconds, "tune_s": tune_seconds, "sample_s": sample_seconds,
                    "total_s": time.perf_counter() - start},
    }  # fmt: skip
    return ImagicResult(chosen.image, report, recipe, samples, None if chosen.mask is None else mask_image(chosen.mask))


def _sample(
    sampler: StableDiffusionPipeline,
    latents: torch.Tensor,
    local: LocalRegion | None,
    conditioning: torch.Tensor,
    negative: torch.Tensor | None,
    padded: np.ndarray,
    target: str,
    scheduler: SchedulerName,
    steps: int,
    guidance_scale: float,
    seed: int,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Stage C at one conditioning: (the (H', W', 3) picture, the (H', W') mask redrawn or None)."""
    if local is not None:
        return sample_in_region(
            sampler, latents, local, conditioning, negative, padded, scheduler, steps, guidance_scale,
            seed, progress,
        )  # fmt: skip
    output = generate(
        sampler, target, seed=seed, steps=steps, guidance_scale=guidance_scale, scheduler=scheduler,
        width=padded.shape[1], height=padded.shape[0], progress=progress,
        prompt_embeds_fn=lambda _pipe, _prompt: conditioning,
    ).images[0]  # fmt: skip
    return np.asarray(output), None


def _region_report(local: LocalRegion | None, asked: str, mask: np.ndarray | None) -> dict[str, Any]:
    if local is None or mask is None:
        return {"asked": asked, "region": "global", "mask_area": 1.0}
    return {
        "asked": asked,
        "region": local.decision.region,
        "confidence": local.decision.confidence,
        "evidence": local.decision.evidence,
        "mask_area": float(mask.mean()),
    }


def _scores(
    picture: Image.Image, source: np.ndarray, judge: Judge | None, lpips_model: torch.nn.Module | None
) -> dict[str, Any]:
    """Judge verdict and preservation of ``source`` (JSON-safe: an identical picture's PSNR is None)."""
    output = np.asarray(picture)
    everywhere = np.ones(source.shape[:2], dtype=bool)
    psnr, ssim = masked_psnr(source, output, everywhere), masked_ssim(source, output, everywhere)
    scores: dict[str, Any] = {"psnr": psnr if math.isfinite(psnr) else None, "ssim": ssim}
    if lpips_model is not None:
        from retouch.metrics.lpips import lpips_distance

        scores["lpips"] = lpips_distance(lpips_model, source, output)
        scores["preservation"] = 1.0 - scores["lpips"]
    else:
        scores["preservation"] = psnr if math.isfinite(psnr) else 1e9  # identical: best
    if judge is not None:
        score, accepted = judge(picture)
        scores["judge_score"], scores["accepted"] = float(score), bool(accepted)
    return scores


def _choose(samples: list[SweepSample], auto: bool) -> tuple[SweepSample, dict[str, Any]]:
    """Auto: the smallest eta with an accepted picture, the best-preserving seed there; when
    none is accepted, the highest judge score (ties: preservation)."""
    if not auto:
        return samples[0], {"eta": samples[0].eta, "seed": samples[0].seed, "rule": "given"}
    accepted = [s for s in samples if s.scores["accepted"]]
    if accepted:
        smallest = min(s.eta for s in accepted)
        chosen = max((s for s in accepted if s.eta == smallest), key=lambda s: s.scores["preservation"])
        rule = "smallest eta the judge accepts; ties: best preservation"
    else:
        chosen = max(samples, key=lambda s: (s.scores["judge_score"], s.scores["preservation"]))
        rule = "no eta accepted: highest judge score; ties: best preservation"
    return chosen, {"eta": chosen.eta, "seed": chosen.seed, "accepted": bool(accepted), "rule": rule}


def _cache_status(cache: ImagicCache, embed_hit: bool, tune_hit: bool) -> str:
    if cache.root is None:
        return "off"
    return "hit" if embed_hit and tune_hit else ("partial" if embed_hit or tune_hit else "miss")


def _make_judge(
    spec: str | os.PathLike[str] | Judge | None,
    target: str,
    source: str | None,
    pixels: np.ndarray,
    device: torch.device,
) -> tuple[Judge, str]:
    """(judge, its name for the report); see ``imagic``'s ``judge`` argument."""
    from retouch.metrics.clip_score import ClipScorer, bundled_clip_path

    if callable(spec):
        return spec, getattr(spec, "__name__", type(spec).__name__)
    if str(spec) == "oracle" or (spec is None and parse_caption(target) is not None):
        return oracle_judge(target), "oracle"
    if spec is None:
        if not (bundled_clip_path() / "config.json").is_file():
            raise RetouchError(
                "--eta auto needs a judge: pass --judge PATH to a local CLIP model folder, or install the "
                f"shapes-64 CLIP at {bundled_clip_path()} (the oracle judges only canonical shapes-64 captions)"
            )
        spec = bundled_clip_path()
    if source:
        return clip_judge(spec, source, target, device), f"clip:{spec} (target vs source caption)"
    scorer = ClipScorer.load(spec, device)
    text = scorer.text_features([target])  # (1, dim)
    baseline = float(scorer.image_features([pixels]) @ text.T)

    def judge(picture: Image.Image) -> tuple[float, bool]:
        gain = float(scorer.image_features([picture]) @ text.T) - baseline
        return gain, gain >= DEFAULT_CLIP_GAIN

    return judge, f"clip:{spec} (gain over the input >= {DEFAULT_CLIP_GAIN})"


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
    if eta != "auto":
        if isinstance(eta, bool) or not isinstance(eta, int | float) or not ETA_RANGE[0] <= eta <= ETA_RANGE[1]:
            raise RetouchError(f"eta must be a number in [{ETA_RANGE[0]}, {ETA_RANGE[1]}] or 'auto', got {eta!r}")
    elif not eta_grid:
        raise RetouchError("eta auto needs a non-empty eta grid")
    if seeds < 1:
        raise RetouchError(f"seeds must be at least 1, got {seeds}")
    if not 0 <= seed <= MAX_SEED - seeds:
        raise RetouchError(f"seed must be between 0 and {MAX_SEED - seeds}, got {seed}")
    if steps < 1:
        raise RetouchError(f"steps must be at least 1, got {steps}")
