"""Teach a model a concept from a few pictures: the loop every personalization method shares.

A method (``textual_inversion``, ``dreambooth``, ``lora_concept``, ``custom_diffusion``: one module
each) says which weights learn and how they are saved; this module does the rest the same way for
all of them: the pictures' latents, prior-preservation class images (``concept_prior``), each step's
draws seeded by (seed, step) so that a run resumed after ``kill -9`` ends with the same weights as
an uninterrupted one, checkpoints, the progress bar, the loss curve and ``concept.json``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import PartialState
from accelerate.utils import reduce
from diffusers import DDPMScheduler, StableDiffusionPipeline
from tqdm.auto import tqdm

from retouch.errors import RetouchError
from retouch.io.atomic import atomic_write_json, check_writable
from retouch.io.locks import lock_folder
from retouch.models.loading import MODEL_DEFAULTS_FILE, LoadedModel
from retouch.train.checkpoint import TRAIN_LOCK, load_checkpoint, save_checkpoint
from retouch.train.concept_data import ConceptImages
from retouch.train.concept_prior import class_batches
from retouch.train.finetune import (
    encode_captions,
    encode_pictures,
    make_optimizer,
    prediction_and_target,
    training_scheduler,
    weights_sha256,
)

FORMAT = 1  # concept.json's format number
MANIFEST = "concept.json"
CHECKPOINTS = "checkpoints"  # under the output folder while training; removed when the run ends
LOSS_CURVE = "loss.png"
StepCallback = Callable[[int, float], None]  # (steps done, that step's loss)


@dataclass(frozen=True)
class ConceptSettings:
    """What every method's training takes; each method adds its own options."""

    steps: int = 400  # optimizer steps
    lr: float | None = None  # Adam's learning rate (None: the method's default_lr)
    batch_size: int = 4  # pictures (with their own timestep and noise) a step
    seed: int = 0  # seeds every draw and every initialization
    checkpoint_every: int = 100  # steps between checkpoints (0: none)
    num_class_images: int = 0  # prior preservation (DreamBooth, Custom Diffusion): 0 is off
    prior_loss_weight: float = 1.0  # lambda of DreamBooth's eq. 2
    class_prompts: tuple[str, ...] = ()  # the class images' prompts, cycled (default "a {class word}")
    class_steps: int = 25  # sampling steps of each class image
    class_images_dir: str | None = None  # their cache (default: ~/.cache/retouch/class-images)
    gradient_checkpointing: bool = False  # recompute the UNet's activations in the backward pass: less memory


class ConceptMethod(Protocol):
    """One personalization method: which weights learn, and how they are saved."""

    name: str  # "textual-inversion", "dreambooth", "lora" or "custom-diffusion"
    default_lr: float  # the paper's / diffusers example's rate for SD-sized models
    uses_prior: bool  # takes prior preservation's class images

    def options(self) -> dict[str, Any]: ...  # the method's own settings, recorded in concept.json

    def prepare(
        self, pipe: StableDiffusionPipeline, concepts: Sequence[ConceptImages], seed: int
    ) -> list[torch.nn.Parameter]: ...  # add tokens / adapters (seeded) and return the weights that learn

    def after_step(self, pipe: StableDiffusionPipeline) -> None: ...  # e.g. put frozen rows back

    def state(self, pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]: ...  # for checkpoints

    def load_state(self, pipe: StableDiffusionPipeline, state: dict[str, torch.Tensor]) -> None: ...

    def save(
        self, pipe: StableDiffusionPipeline, concepts: Sequence[ConceptImages], folder: Path
    ) -> dict[str, str]: ...  # write the ecosystem's files; role -> file name


@dataclass
class ConceptBatches:
    """What the steps draw from: latents (n, 4, h, w) and captions, pictures and class images."""

    latents: torch.Tensor
    captions: list[str]
    class_latents: torch.Tensor | None = None
    class_captions: list[str] = field(default_factory=list)


@dataclass
class ConceptResult:
    """A trained concept: its folder, ``concept.json``'s content, every step's loss, and the model,
    which now holds the concept (trained in place)."""

    folder: Path
    manifest: dict[str, Any]
    losses: list[float]
    model: LoadedModel


def check_settings(settings: ConceptSettings) -> None:
    """Refuse settings no run can use, before anything loads or trains."""
    for name in ("lr", "prior_loss_weight"):
        if not math.isfinite(getattr(settings, name)):
            raise RetouchError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(settings, name)}")
    if settings.steps < 1 or settings.batch_size < 1:
        raise RetouchError(f"--steps and --batch-size must be at least 1 (got {settings.steps}, {settings.batch_size})")
    if not settings.lr > 0 or settings.prior_loss_weight < 0:
        raise RetouchError(f"--lr must be above 0 and --prior-loss-weight at least 0 (got {settings.lr})")
    if settings.checkpoint_every < 0 or settings.num_class_images < 0:
        raise RetouchError("--checkpoint-every and --num-class-images must be at least 0")


def train_concept(
    model: LoadedModel,
    method: ConceptMethod,
    concepts: Sequence[ConceptImages],
    settings: ConceptSettings,
    output: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    on_step: StepCallback | None = None,
) -> ConceptResult:
    """Teach ``model`` the ``concepts`` with ``method`` and write its files and ``concept.json`` to
    ``output``. With ``resume``, continue from the newest checkpoint there. ``model`` is trained in
    place. A second trainer on ``output`` is refused while this one runs. ``on_step(step, loss)``
    is called after every optimizer step (a live loss curve, say).

    Under ``accelerate launch`` with several processes each takes ``batch_size / processes`` of
    every step's pictures (its own draws) and the gradients are averaged, so every process holds
    the same weights; the main process alone checks and locks ``output`` and writes the files."""
    if settings.lr is None:
        settings = replace(settings, lr=method.default_lr)
    check_settings(settings)
    output = Path(output)
    team = PartialState(cpu=model.pipe.device.type == "cpu")
    if team.num_processes > 1 and settings.batch_size % team.num_processes:
        raise RetouchError(f"--batch-size {settings.batch_size} does not split over {team.num_processes} processes")
    lock = None
    if team.is_main_process:
        _check_output(output, resume)
        lock = lock_folder(output, TRAIN_LOCK, "retouch train")
    try:
        return _train(model, method, list(concepts), settings, output, resume, progress, on_step, team)
    finally:
        if lock is not None:
            lock.release(remove=True)


def _check_output(output: Path, resume: bool) -> None:
    if (output / MANIFEST).exists():
        raise RetouchError(f"{output} already holds a trained concept; pick another --output")
    busy = [p.name for p in output.iterdir() if p.name not in (CHECKPOINTS, TRAIN_LOCK)] if output.is_dir() else []
    if busy:
        raise RetouchError(f"{output} is not empty ({busy[0]} ...); pick a new or empty --output")
    if (output / CHECKPOINTS).exists() and not resume:
        raise RetouchError(f"{output} holds an unfinished run: pass --resume to continue it, or pick another --output")
    check_writable(output)


def _train(
    model: LoadedModel,
    method: ConceptMethod,
    concepts: list[ConceptImages],
    settings: ConceptSettings,
    output: Path,
    resume: bool,
    progress: bool,
    on_step: StepCallback | None,
    team: PartialState,
) -> ConceptResult:
    start = time.perf_counter()
    pipe = model.pipe
    base_sha = weights_sha256(pipe)
    batches = ConceptBatches(
        torch.cat([encode_pictures(pipe, c.images) for c in concepts]), [t for c in concepts for t in c.captions]
    )
    if method.uses_prior and settings.num_class_images:
        with team.main_process_first():  # the main process draws the class images; the others read its cache
            batches.class_latents, batches.class_captions = class_batches(
                model,
                concepts,
                settings.class_prompts,
                settings.num_class_images,
                settings.class_steps,
                settings.class_images_dir,
                progress and team.is_main_process,
            )
    trainable = method.prepare(pipe, concepts, settings.seed)
    optimizer = make_optimizer(trainable, settings.lr, pipe.device)
    first, losses = _restore(output / CHECKPOINTS, method, pipe, optimizer) if resume else (0, [])
    prep_seconds = time.perf_counter() - start
    losses = _loop(
        pipe, method, trainable, optimizer, batches, settings, output, first, losses, progress, on_step, team
    )
    train_seconds = time.perf_counter() - start - prep_seconds
    if not team.is_main_process:
        team.wait_for_everyone()  # the main process writes the files
        return ConceptResult(output, json.loads((output / MANIFEST).read_text()), losses, model)
    files = method.save(pipe, concepts, output)
    if "model" in files and model.defaults:  # a whole model (DreamBooth) samples as its base recommends
        atomic_write_json(output / files["model"] / MODEL_DEFAULTS_FILE, model.defaults)
    _plot_losses(losses, output / LOSS_CURVE, method.name)
    timing = (prep_seconds, train_seconds, first)
    manifest = _manifest(model, method, concepts, settings, base_sha, files, losses, timing)
    manifest["figures"]["processes"] = team.num_processes
    atomic_write_json(output / MANIFEST, manifest)
    shutil.rmtree(output / CHECKPOINTS, ignore_errors=True)
    team.wait_for_everyone()
    return ConceptResult(output, manifest, losses, model)


def _restore(
    folder: Path, method: ConceptMethod, pipe: StableDiffusionPipeline, optimizer: torch.optim.Optimizer
) -> tuple[int, list[float]]:
    saved = load_checkpoint(folder)
    if saved is None:
        return 0, []
    step, weights, state = saved
    method.load_state(pipe, weights)
    optimizer.load_state_dict(state["optimizer"])
    return step, list(state["losses"])


def step_loss(
    pipe: StableDiffusionPipeline,
    noise_scheduler: DDPMScheduler,
    batches: ConceptBatches,
    settings: ConceptSettings,
    step: int,
    part: tuple[int, int] = (0, 1),
) -> torch.Tensor:
    """Step ``step``'s loss, its draws seeded by (seed, step) alone: pictures, then class images
    (DreamBooth's prior preservation, Ruiz et al. 2022 eq. 2), then noise and timesteps. With
    ``part`` = (process, processes) and several processes, that process's share of the batch,
    seeded by (seed, step, process)."""
    process, processes = part
    rng = np.random.default_rng([settings.seed, step] + ([process] if processes > 1 else []))
    n = settings.batch_size // processes
    picks = rng.integers(0, len(batches.latents), n)
    latents, captions = batches.latents[picks], [batches.captions[i] for i in picks]
    if batches.class_latents is not None:
        prior = rng.integers(0, len(batches.class_latents), n)
        latents = torch.cat([latents, batches.class_latents[prior]])
        captions += [batches.class_captions[i] for i in prior]
    generator = torch.Generator("cpu").manual_seed(int(rng.integers(2**62)))
    embeds = encode_captions(pipe, captions)  # (batch, tokens, dim)
    prediction, target = prediction_and_target(pipe.unet, noise_scheduler, latents.to(pipe.device), embeds, generator)
    loss = F.mse_loss(prediction[:n], target[:n])
    if batches.class_latents is not None:
        loss = loss + settings.prior_loss_weight * F.mse_loss(prediction[n:], target[n:])
    return loss


def _loop(
    pipe: StableDiffusionPipeline,
    method: ConceptMethod,
    trainable: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    batches: ConceptBatches,
    settings: ConceptSettings,
    output: Path,
    first: int,
    losses: list[float],
    progress: bool,
    on_step: StepCallback | None,
    team: PartialState,
) -> list[float]:
    noise_scheduler = training_scheduler(pipe)
    for module in (pipe.unet, pipe.text_encoder, pipe.vae):
        module.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    pipe.unet.train()
    pipe.text_encoder.train()
    if settings.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
    shown = progress and team.is_main_process
    bar = tqdm(range(first, settings.steps), desc=method.name, disable=not shown, leave=False)
    try:
        for step in bar:
            loss = step_loss(pipe, noise_scheduler, batches, settings, step, (team.process_index, team.num_processes))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if team.num_processes > 1:  # every process steps with the mean gradient: the weights stay equal
                for p in trainable:
                    if p.grad is not None:
                        p.grad = reduce(p.grad, "mean")
                loss = reduce(loss.detach(), "mean")
            optimizer.step()
            method.after_step(pipe)
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            done = step + 1
            if on_step is not None:
                on_step(done, losses[-1])
            due = settings.checkpoint_every and done % settings.checkpoint_every == 0 and done < settings.steps
            if due and team.is_main_process:
                state = {"optimizer": optimizer.state_dict(), "losses": losses}
                save_checkpoint(output / CHECKPOINTS, done, method.state(pipe), state)
    finally:
        for module in (pipe.unet, pipe.text_encoder):
            module.eval()
            module.requires_grad_(False)
        if settings.gradient_checkpointing:
            pipe.unet.disable_gradient_checkpointing()
    return losses


def _manifest(
    model: LoadedModel,
    method: ConceptMethod,
    concepts: list[ConceptImages],
    settings: ConceptSettings,
    base_sha: str,
    files: dict[str, str],
    losses: list[float],
    timing: tuple[float, float, int],
) -> dict[str, Any]:
    prep, seconds, first = timing
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "format": FORMAT,
        "method": method.name,
        "tokens": [c.token for c in concepts],
        "class_word": concepts[0].class_word,
        "base_model": model.name,
        "base_model_sha256": base_sha,
        "settings": {**asdict(settings), **method.options()},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "figures": {
            "train_seconds": round(seconds, 2),
            "prepare_seconds": round(prep, 2),
            "seconds_per_step": round(seconds / max(1, settings.steps - first), 4),
            "resumed_at_step": first,
            "final_loss": float(np.mean(tail)),
        },
        "files": files,
        "concepts": [
            {"token": c.token, "class_word": c.class_word, "images": c.folder, "captions": list(c.captions)}
            for c in concepts
        ],
    }


def _plot_losses(losses: list[float], path: Path, title: str) -> None:
    """Every step's loss and its running mean, log scale, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = np.asarray(losses)
    k = max(1, len(loss) // 20)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(np.arange(1, len(loss) + 1), loss, alpha=0.3, label="step")
    ax.plot(np.arange(k, len(loss) + 1), np.convolve(loss, np.ones(k) / k, mode="valid"), label=f"mean of {k}")
    ax.set_yscale("log")
    ax.set(title=title, xlabel="step", ylabel="loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
