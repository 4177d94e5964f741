"""Train a small CLIP (Radford et al. 2021) on shapes-64: a ViT image tower and a text tower over the
world's word-level tokenizer, with the symmetric contrastive loss (``CLIPModel(return_loss=True)``).

It is the judge and metric model of the shapes-64 world (CLIP score, Imagic's ``eta="auto"``). The
output folder loads with ``CLIPModel.from_pretrained`` and ``CLIPProcessor.from_pretrained``.
Scenes are drawn procedurally with a per-step seeded rng, so a resumed run sees the same data.

    retouch train clip --output src/retouch/assets/shapes-64-clip --steps 2000
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers.optimization import get_cosine_schedule_with_warmup
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
from transformers.models.clip import CLIPImageProcessorPil

from retouch.core.limits import MAX_SEED, Limit
from retouch.io.locks import lock_folder
from retouch.train.checkpoint import TRAIN_LOCK, load_checkpoint, save_checkpoint
from retouch.train.data import make_source
from retouch.train.recipe_check import check_recipe
from retouch.train.tokenizer import build_clip_tokenizer

DATA = "shapes64"  # the registered data source (retouch.data_sources entry point) it learns from

Log = Callable[[str], None]
RETRIEVAL_SCENES = 100
RETRIEVAL_SEED = 12345  # scenes no training step draws (steps draw with [seed, step])


@dataclass
class ClipTrainConfig:
    """Everything a run needs; saved as ``recipe.json`` beside the model."""

    steps: int = 4000
    batch_size: int = 128  # in-batch negatives: 127 per caption
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 200
    seed: int = 0
    max_length: int = 20  # tokens, start and end included
    image_size: int = 64
    patch_size: int = 8  # 8 x 8 = 64 patches
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    projection_dim: int = 128
    checkpoint_every: int = 500
    log_every: int = 100

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def check(self) -> None:
        """Refuse a wrong type, a non-finite number or a value out of range."""
        check_recipe(self, CLIP_LIMITS, {})


_COUNT = Limit(1, 4096, integer=True)
CLIP_LIMITS = {
    "steps": Limit(0, 10**7, integer=True), "batch_size": _COUNT, "lr": Limit(0, 1, low_open=True),
    "weight_decay": Limit(0, 10), "warmup_steps": Limit(0, 10**7, integer=True),
    "seed": Limit(0, MAX_SEED, integer=True), "max_length": Limit(3, 77, integer=True),
    "image_size": Limit(8, 2048, integer=True), "patch_size": Limit(1, 2048, integer=True),
    "vision_hidden": _COUNT, "vision_layers": Limit(1, 64, integer=True), "vision_heads": Limit(1, 64, integer=True),
    "text_hidden": _COUNT, "text_layers": Limit(1, 64, integer=True), "text_heads": Limit(1, 64, integer=True),
    "projection_dim": _COUNT, "checkpoint_every": Limit(1, 10**7, integer=True),
    "log_every": Limit(1, 10**7, integer=True),
}


def new_clip(config: ClipTrainConfig, tokenizer: CLIPTokenizer) -> CLIPModel:
    """A randomly initialised CLIPModel sized by ``config``."""
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": config.text_hidden,
        "intermediate_size": 4 * config.text_hidden,
        "num_hidden_layers": config.text_layers,
        "num_attention_heads": config.text_heads,
        "max_position_embeddings": config.max_length,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,  # the text tower pools at the first end token
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "hidden_size": config.vision_hidden,
        "intermediate_size": 4 * config.vision_hidden,
        "num_hidden_layers": config.vision_layers,
        "num_attention_heads": config.vision_heads,
    }
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(config.seed)
        return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=config.projection_dim))


def clip_processor(tokenizer: CLIPTokenizer, image_size: int) -> CLIPProcessor:
    """CLIP's normalisation at ``image_size`` (a picture of that size passes through unresized).
    The PIL-backed image processor: torchvision is not installed."""
    images = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def pixel_values(processor: CLIPProcessor, pictures: np.ndarray) -> torch.Tensor:
    """(n, H, W, 3) uint8 at the processor's size -> (n, 3, H, W), exactly what the processor gives."""
    image_processor = processor.image_processor
    mean = torch.tensor(image_processor.image_mean)[:, None, None]
    std = torch.tensor(image_processor.image_std)[:, None, None]
    return (torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def tokens(processor: CLIPProcessor, captions: list[str]) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask, padded to the tokenizer's (and text tower's) full length."""
    length = processor.tokenizer.model_max_length
    return processor.tokenizer(
        captions, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    ).data


def save_untrained_clip(folder: str | Path, config: ClipTrainConfig | None = None) -> Path:
    """A randomly initialised CLIP and its processor as a folder (for tests and plumbing checks)."""
    config = config or ClipTrainConfig()
    folder = Path(folder)
    tokenizer = build_clip_tokenizer(make_source(DATA).vocabulary(), folder / "tokenizer", max_length=config.max_length)
    new_clip(config, tokenizer).save_pretrained(folder, safe_serialization=True)
    clip_processor(tokenizer, config.image_size).save_pretrained(folder)
    return folder


@torch.no_grad()
def retrieval_accuracy(
    model: CLIPModel, processor: CLIPProcessor, n: int = RETRIEVAL_SCENES, seed: int = RETRIEVAL_SEED
) -> float:
    """Caption-to-image top-1 accuracy among ``n`` random scenes: for each scene's caption, the
    ``n`` pictures ranked by similarity; a hit when the best one carries that caption (two scenes
    may share one, differing only in position, which captions do not name)."""
    model.eval()
    pictures, captions = make_source(DATA).sample(np.random.default_rng(seed), n)
    device = next(model.parameters()).device
    image = model.get_image_features(pixel_values=pixel_values(processor, pictures).to(device))
    text = model.get_text_features(**{k: v.to(device) for k, v in tokens(processor, captions).items()})
    image, text = (torch.nn.functional.normalize(_pooled(x), dim=-1) for x in (image, text))
    best = (text @ image.T).argmax(dim=1).tolist()  # (n,) the best picture for each caption
    return float(np.mean([captions[j] == captions[i] for i, j in enumerate(best)]))


def _pooled(output: torch.Tensor | object) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@dataclass
class ClipTrainResult:
    folder: Path
    steps: int
    final_loss: float | None
    retrieval_top1: float  # among RETRIEVAL_SCENES scenes
    seconds: float


def train_clip(
    config: ClipTrainConfig,
    output: str | Path,
    resume: bool = False,
    device: str | torch.device | None = None,
    log: Log = print,
) -> ClipTrainResult:
    """Train (or, with ``resume``, continue from the last checkpoint in ``output/work``) and save
    the model and processor to ``output``. A second trainer on ``output`` is refused while this
    one runs (an OS lock, gone with its process)."""
    config.check()
    lock = lock_folder(output, TRAIN_LOCK, "retouch train")
    try:
        return _train_clip(config, Path(output), resume, device, log)
    finally:
        lock.release(remove=True)


def _train_clip(
    config: ClipTrainConfig, output: Path, resume: bool, device: str | torch.device | None, log: Log
) -> ClipTrainResult:
    start = time.perf_counter()
    work = output / "work"
    if work.exists() and not resume:
        raise FileExistsError(f"{output} already holds a training run: resume it or pick another output")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = build_clip_tokenizer(make_source(DATA).vocabulary(), work / "tokenizer", max_length=config.max_length)
    processor = clip_processor(tokenizer, config.image_size)
    model = new_clip(config, tokenizer).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    first = 0
    checkpoint = load_checkpoint(work / "checkpoints") if resume else None
    if checkpoint is not None:
        first, weights, state = checkpoint
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        log(f"resumed at step {first}")
    (work / "recipe.json").write_text(config.to_json())

    source, loss_value = make_source(DATA), None
    model.train()
    for step in range(first, config.steps):
        pictures, captions = source.sample(np.random.default_rng([config.seed, step]), config.batch_size)
        batch = {k: v.to(device) for k, v in tokens(processor, captions).items()}
        out = model(**batch, pixel_values=pixel_values(processor, pictures).to(device), return_loss=True)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        loss_value = float(out.loss.detach())
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            log(f"step {step + 1}/{config.steps} loss {loss_value:.4f}")
            with open(work / "log.jsonl", "a") as f:
                f.write(json.dumps({"step": step + 1, "loss": loss_value}) + "\n")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            state = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}
            save_checkpoint(work / "checkpoints", step + 1, model.state_dict(), state)

    accuracy = retrieval_accuracy(model, processor)
    model.save_pretrained(output, safe_serialization=True)
    processor.save_pretrained(output)
    (output / "recipe.json").write_text(config.to_json())
    log(f"caption-to-image top-1 among {RETRIEVAL_SCENES} scenes: {accuracy:.1%}")
    return ClipTrainResult(output, config.steps, loss_value, accuracy, time.perf_counter() - start)
