"""The fine-tuning kit: train a Stable Diffusion UNet (or an embedding it reads) on a few pictures.

Imagic's stages A and B use it today; personalization (Textual Inversion, DreamBooth, LoRA) trains
the same way, so each piece does one job and takes plain tensors and modules:

- ``training_scheduler``: the forward process to add noise with;
- ``diffusion_loss`` / ``reconstruction_loss``: the denoising loss at random / fixed draws;
- ``training_mode``, ``make_optimizer``, ``train``, ``train_on_latents``: which weights learn, with
  what, on what, for how long;
- ``add_lora``, ``lora_parameters``, ``lora_state_dict``, ``load_lora_state``, ``tuned_unet``:
  LoRA adapters through peft (as diffusers' ``train_text_to_image_lora``) or a full copy of the UNet.

Mixed precision on CUDA (bfloat16 where supported) and 8-bit Adam when bitsandbytes is installed;
plain float32 and torch's Adam on CPU, so results there are reproducible bit for bit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tqdm.auto import tqdm

from retouch.errors import RetouchError

Tune = Literal["lora", "full"]
TUNES: tuple[str, ...] = ("lora", "full")
LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")  # diffusers' train_text_to_image_lora
EVAL_DRAWS = 8  # fixed (timestep, noise) draws on which ``reconstruction_loss`` measures a model


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
    (1, tokens, dim), at ``batch_size`` random timesteps and noises drawn from ``generator``.
    The target follows the scheduler's prediction type (epsilon or v)."""
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
    """``diffusion_loss`` at ``draws`` fixed draws (seeded): comparable before and after training."""
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


def train(
    unet: UNet2DConditionModel,
    trainable: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[], torch.Tensor],
    steps: int,
    *,
    desc: str = "train",
    progress: bool = False,
    checkpointing: bool = True,
) -> list[float]:
    """``steps`` optimizer steps on ``loss_fn`` (float16 autocast gets a gradient scaler).
    ``trainable`` are the UNet's weights that learn: none when the optimizer holds something
    else, such as an embedding. Returns every step's loss."""
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


def train_on_latents(
    unet: UNet2DConditionModel,
    noise_scheduler: DDPMScheduler,
    latents: torch.Tensor,
    embeds: torch.Tensor,
    trainable: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    desc: str = "train",
    progress: bool = False,
    checkpointing: bool = True,
) -> list[float]:
    """``train`` on the ``diffusion_loss`` of ``latents`` (1, 4, h, w) under ``embeds`` (1, tokens,
    dim), ``batch_size`` draws a step from a generator seeded with ``seed``. What learns is what
    ``optimizer`` holds: ``trainable`` UNet weights, or ``embeds`` itself (``trainable`` empty)."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return train(
        unet,
        trainable,
        optimizer,
        lambda: diffusion_loss(unet, noise_scheduler, latents, embeds, generator, batch_size),
        steps,
        desc=desc,
        progress=progress,
        checkpointing=checkpointing,
    )


def add_lora(
    unet: UNet2DConditionModel,
    rank: int,
    seed: int,
    adapter_name: str,
    targets: Sequence[str] = LORA_TARGETS,
) -> None:
    """Add a LoRA adapter (peft, alpha = rank) to ``targets``, its random init seeded without
    touching the global RNG; its weights are float32 whatever the UNet's dtype, so they train."""
    from peft import LoraConfig

    if getattr(unet, "peft_config", None):
        raise RetouchError(
            f"the model's UNet already carries LoRA adapters; {adapter_name} adds its own. Load the model without them"
        )
    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(targets))
    with torch.random.fork_rng(devices=[]):  # the init draws from the global RNG: seed it, leave it be
        torch.manual_seed(seed)
        unet.add_adapter(config, adapter_name=adapter_name)
    for p in lora_parameters(unet):
        p.data = p.data.float()


def lora_parameters(unet: UNet2DConditionModel) -> list[torch.nn.Parameter]:
    """The LoRA weights of every adapter on ``unet`` (empty without adapters)."""
    return [p for name, p in unet.named_parameters() if ".lora_" in name]


def lora_state_dict(unet: UNet2DConditionModel, adapter_name: str) -> dict[str, torch.Tensor]:
    """The adapter's weights on the CPU, keyed as peft saves them (for safetensors)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(unet, adapter_name=adapter_name).items()}


def load_lora_state(unet: UNet2DConditionModel, state: dict[str, torch.Tensor], adapter_name: str) -> None:
    """Put ``lora_state_dict``'s weights back into the adapter; errors when they do not fit."""
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(unet, state, adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise RetouchError(f"the saved LoRA weights do not fit this UNet ({unexpected[:3]} ...)")


@contextmanager
def tuned_unet(
    pipe: StableDiffusionPipeline,
    tune: Tune,
    *,
    lora_rank: int,
    seed: int,
    adapter_name: str,
    state: dict[str, torch.Tensor] | None = None,
) -> Iterator[UNet2DConditionModel]:
    """The UNet to tune (``state`` None) or restored (``state`` saved from one): for ``"lora"`` the
    pipeline's own UNet with a fresh adapter, removed again on exit; for ``"full"`` a copy of it,
    so the pipeline's weights are never changed."""
    if tune == "full":
        tuned = copy.deepcopy(pipe.unet)
        if state is not None:
            tuned.load_state_dict(state)
        yield tuned
        return
    add_lora(pipe.unet, lora_rank, seed, adapter_name)
    try:
        if state is not None:
            load_lora_state(pipe.unet, state, adapter_name)
        yield pipe.unet
    finally:
        pipe.unet.unload_lora()
