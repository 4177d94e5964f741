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
import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tqdm.auto import tqdm

from retouch.errors import RetouchError

Tune = Literal["lora", "full"]
TUNES: tuple[str, ...] = ("lora", "full")
LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")  # diffusers' train_text_to_image_lora
# kohya's LoCon: also the ResNet blocks' 3x3 convolutions, the transformers' projections and feed-forwards
LORA_CONV_TARGETS: tuple[str, ...] = (
    *LORA_TARGETS, "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2"
)
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
    x0 = latents.float().expand(batch_size, -1, -1, -1)  # (batch, 4, h, w)
    prediction, target = prediction_and_target(
        unet, noise_scheduler, x0, embeds.expand(batch_size, -1, -1), generator
    )
    return F.mse_loss(prediction, target)


def prediction_and_target(
    unet: UNet2DConditionModel,
    noise_scheduler: DDPMScheduler,
    x0: torch.Tensor,
    embeds: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The UNet's prediction on ``x0`` (batch, 4, h, w) noised at a random timestep each, under
    ``embeds`` (batch, tokens, dim), and what it should be (the noise, or v for v-prediction);
    both float32. Noise first, then timesteps, drawn on the CPU from ``generator``."""
    device, dtype = x0.device, unet.dtype
    noise = torch.randn(x0.shape, generator=generator).to(device)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(x0),), generator=generator).to(device)
    noisy = noise_scheduler.add_noise(x0, noise, t)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(x0, noise, t)
    else:
        target = noise
    amp = autocast_dtype(device)
    with torch.autocast(device.type, dtype=amp) if amp else nullcontext():
        prediction = unet(noisy.to(dtype), t, encoder_hidden_states=embeds.to(dtype)).sample
    return prediction.float(), target.float()


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


def token_names(token: str, num_vectors: int) -> list[str]:
    """diffusers' names for a token of ``num_vectors`` vectors: ``<t>``, ``<t>_1``, ... (as
    ``load_textual_inversion`` adds them and ``maybe_convert_prompt`` expands ``<t>`` into them)."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def word_embedding(pipe: StableDiffusionPipeline, word: str) -> torch.Tensor:
    """The input embedding (dim,) of ``word``, which must be one token of the tokenizer."""
    ids = pipe.tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise RetouchError(
            f"the word {word!r} is {len(ids)} tokens for this model's tokenizer; pick a word that is one token"
        )
    return pipe.text_encoder.get_input_embeddings().weight[ids[0]].detach().clone()


def add_token(pipe: StableDiffusionPipeline, token: str, vectors: torch.Tensor) -> list[int]:
    """Add ``token`` with ``vectors`` (n, dim) exactly as diffusers' ``load_textual_inversion``
    does: ``tokenizer.add_tokens`` (never an unknown-token fallback), the text encoder's embedding
    table resized, the new rows set. Returns the new token ids."""
    names = token_names(token, len(vectors))
    taken = [name for name in names if name in pipe.tokenizer.get_vocab()]
    if taken:
        raise RetouchError(f"the token {taken[0]} is already in this model's tokenizer; pick another token")
    pipe.tokenizer.add_tokens(names)
    ids = pipe.tokenizer.convert_tokens_to_ids(names)
    pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer), mean_resizing=False)
    weight = pipe.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[ids] = vectors.to(weight.device, weight.dtype)
    return ids


def token_vectors(pipe: StableDiffusionPipeline, token: str) -> torch.Tensor:
    """The vectors (n, dim) of a token added by ``add_token`` (all its ``<t>_i`` parts)."""
    vocab, names = pipe.tokenizer.get_vocab(), [token]
    while f"{token}_{len(names)}" in vocab:
        names.append(f"{token}_{len(names)}")
    weight = pipe.text_encoder.get_input_embeddings().weight
    return weight[[vocab[n] for n in names]].detach().cpu().clone()


def initial_vectors(pipe: StableDiffusionPipeline, word: str | None, num_vectors: int, seed: int) -> torch.Tensor:
    """A new token's first vectors (n, dim): ``word``'s embedding in each (Gal et al. 2022 start
    from a coarse descriptor), or without one a seeded draw at the embedding table's scale."""
    if word:
        return word_embedding(pipe, word).repeat(num_vectors, 1)
    weight = pipe.text_encoder.get_input_embeddings().weight.detach()
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((num_vectors, weight.shape[1]), generator=generator) * weight.float().std().cpu()


def new_token_rows(pipe: StableDiffusionPipeline, tokens: Sequence[str]) -> torch.Tensor:
    """A (vocab,) bool mask of the rows of the embedding table that ``tokens`` (all parts) own."""
    vocab = pipe.tokenizer.get_vocab()
    mask = torch.zeros(pipe.text_encoder.get_input_embeddings().weight.shape[0], dtype=torch.bool)
    for token in tokens:
        mask[[vocab[n] for n in vocab if n == token or n.startswith(f"{token}_")]] = True
    return mask


def encode_captions(pipe: StableDiffusionPipeline, captions: Sequence[str]) -> torch.Tensor:
    """The text encoder's hidden states (batch, tokens, dim) for ``captions``, with gradients, each
    caption's multi-vector tokens expanded as the pipeline expands them when sampling."""
    texts = [pipe.maybe_convert_prompt(c, pipe.tokenizer) for c in captions]
    ids = pipe.tokenizer(
        texts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return pipe.text_encoder(ids.to(pipe.text_encoder.device))[0]


def weights_sha256(pipe: StableDiffusionPipeline) -> str:
    """sha256 of every weight of the UNet, text encoder and VAE (names, shapes, bytes), in order."""
    digest = hashlib.sha256()
    for module in (pipe.unet, pipe.text_encoder, pipe.vae):
        for name, tensor in module.state_dict().items():
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def encode_pictures(pipe: StableDiffusionPipeline, pictures: np.ndarray) -> torch.Tensor:
    """(n, h, w, 3) uint8 pictures -> (n, 4, h/f, w/f) float32 latents (the posterior means)."""
    from retouch.core.latents import encode

    return torch.cat([encode(pipe, picture) for picture in pictures]).float()
