"""LoRA (Hu et al. 2021) for a concept: low-rank adapters on the UNet's attention (and the text
encoder's), through peft, as diffusers' ``train_dreambooth_lora`` example adds them; with
``conv=True`` also on the UNet's ResNet convolutions, projections and feed-forwards (kohya's LoCon),
where a UNet draws outlines and textures, not only on the layers that route the text to them.

The concept's token is added to the tokenizer and, by default, its vector learns with the adapters
(pivotal tuning); ``train_token=False`` keeps it at its first value, as DreamBooth does. Writes
``pytorch_lora_weights.safetensors`` (``pipe.load_lora_weights``), a kohya copy for A1111/ComfyUI,
and the token's ``learned_embeds.safetensors`` (``pipe.load_textual_inversion``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline

from retouch.errors import RetouchError
from retouch.train.concept_data import ConceptImages
from retouch.train.concept_files import TEXT_LORA_TARGETS, TokenTraining, save_embeddings, save_lora
from retouch.train.finetune import LORA_CONV_TARGETS, LORA_TARGETS

MAX_RANK = 256


@dataclass
class LoraConcept:
    """The method's options; the shared loop (``retouch.train.concept``) calls the rest."""

    rank: int = 4  # adapter rank (alpha = rank: scale 1)
    train_text_encoder: bool = True  # adapters on the text encoder too (kohya's default)
    train_token: bool = True  # the token's vector learns with the adapters
    init_word: str | None = None  # the token starts as this word (default: a seeded draw)
    conv: bool = False  # adapters on the UNet's convolutions and feed-forwards too (LORA_CONV_TARGETS)
    name: str = "lora"
    uses_prior: bool = True  # with class images, as kohya's regularization images
    default_lr: float = 1e-4
    tokens: TokenTraining = field(default_factory=TokenTraining, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.rank <= MAX_RANK:
            raise RetouchError(f"--rank must be 1 to {MAX_RANK}, got {self.rank}")
        self.tokens = TokenTraining(self.init_word, from_class_word=False)

    def options(self) -> dict[str, Any]:
        return {"rank": self.rank, "train_text_encoder": self.train_text_encoder, "train_token": self.train_token,
                "init_word": self.init_word, "conv": self.conv}

    def prepare(
        self, pipe: StableDiffusionPipeline, concepts: Sequence[ConceptImages], seed: int
    ) -> list[torch.nn.Parameter]:
        from peft import LoraConfig

        table = self.tokens.add(pipe, concepts, seed)
        unet_targets = LORA_CONV_TARGETS if self.conv else LORA_TARGETS
        modules = [(pipe.unet, unet_targets)] + ([(pipe.text_encoder, TEXT_LORA_TARGETS)] * self.train_text_encoder)
        for i, (module, targets) in enumerate(modules):
            if getattr(module, "peft_config", None):
                raise RetouchError("the model already carries LoRA adapters; load it without them to train a LoRA")
            config = LoraConfig(r=self.rank, lora_alpha=self.rank, init_lora_weights="gaussian",
                                target_modules=list(targets))
            with torch.random.fork_rng(devices=[]):  # peft draws the init from the global RNG
                torch.manual_seed(seed + 1000 + i)
                module.add_adapter(config)
        return self.adapter_parameters(pipe) + ([table] if self.train_token else [])

    def adapter_parameters(self, pipe: StableDiffusionPipeline) -> list[torch.nn.Parameter]:
        return [p for module in (pipe.unet, pipe.text_encoder) for n, p in module.named_parameters() if ".lora_" in n]

    def after_step(self, pipe: StableDiffusionPipeline) -> None:
        self.tokens.restore(pipe)

    def state(self, pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
        adapters = {n: p.detach() for m in ("unet", "text_encoder")
                    for n, p in getattr(pipe, m).named_parameters(prefix=m) if ".lora_" in n}
        return {**adapters, **self.tokens.state(pipe)}

    def load_state(self, pipe: StableDiffusionPipeline, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for m in ("unet", "text_encoder"):
                for n, p in getattr(pipe, m).named_parameters(prefix=m):
                    if ".lora_" in n:
                        p.copy_(state[n])
        self.tokens.load_state(pipe, state)

    def save(self, pipe: StableDiffusionPipeline, concepts: Sequence[ConceptImages], folder: Path) -> dict[str, str]:
        return {**save_lora(pipe, folder, self.train_text_encoder), **save_embeddings(pipe, [c.token for c in concepts],
                                                                                       folder)}
