"""DreamBooth (Ruiz et al. 2022): fine-tune the model on ``a <token> <class>`` with the
prior-preservation loss on the base model's own pictures of ``a <class>`` (eq. 2).

The token is added to the tokenizer as a seeded vector (a rare identifier) that learns only with
``train_text_encoder``. Full tuning writes a whole diffusers folder ``model/`` (``from_pretrained``);
``lora=True`` trains LoRA adapters instead (``retouch.train.lora_concept``) and writes their files.
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
from retouch.train.concept_files import TokenTraining
from retouch.train.lora_concept import LoraConcept

MODEL_FOLDER = "model"


@dataclass
class DreamBooth:
    """The method's options; the shared loop (``retouch.train.concept``) calls the rest."""

    lora: bool = False  # LoRA adapters instead of every UNet weight
    train_text_encoder: bool = False  # the text encoder learns too (with lora: its adapters)
    rank: int = 4  # with lora
    conv: bool = False  # with lora: adapters on the convolutions and feed-forwards too (LoCon)
    name: str = "dreambooth"
    uses_prior: bool = True
    default_lr: float = 5e-6  # with lora: LoraConcept's 1e-4
    tokens: TokenTraining = field(default_factory=lambda: TokenTraining(from_class_word=False), repr=False)
    adapters: LoraConcept | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.conv and not self.lora:
            raise RetouchError("--conv places LoRA adapters on the convolutions: it needs --lora")
        if self.lora:
            self.adapters = LoraConcept(self.rank, self.train_text_encoder, train_token=False, conv=self.conv)
            self.default_lr = self.adapters.default_lr

    def options(self) -> dict[str, Any]:
        return {"lora": self.lora, "train_text_encoder": self.train_text_encoder,
                **({"rank": self.rank, "conv": self.conv} if self.lora else {})}

    def prepare(
        self, pipe: StableDiffusionPipeline, concepts: Sequence[ConceptImages], seed: int
    ) -> list[torch.nn.Parameter]:
        if self.adapters is not None:
            return self.adapters.prepare(pipe, concepts, seed)
        self.tokens.add(pipe, concepts, seed)
        text = list(pipe.text_encoder.parameters()) if self.train_text_encoder else []
        return list(pipe.unet.parameters()) + text

    def after_step(self, pipe: StableDiffusionPipeline) -> None:
        if self.adapters is not None:  # else the token learns only with the rest of the text encoder
            self.adapters.after_step(pipe)

    def state(self, pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
        if self.adapters is not None:
            return self.adapters.state(pipe)
        return {f"{m}.{k}": v for m in ("unet", "text_encoder") for k, v in getattr(pipe, m).state_dict().items()}

    def load_state(self, pipe: StableDiffusionPipeline, state: dict[str, torch.Tensor]) -> None:
        if self.adapters is not None:
            return self.adapters.load_state(pipe, state)
        for m in ("unet", "text_encoder"):
            getattr(pipe, m).load_state_dict({k[len(m) + 1 :]: v for k, v in state.items() if k.startswith(f"{m}.")})

    def save(self, pipe: StableDiffusionPipeline, concepts: Sequence[ConceptImages], folder: Path) -> dict[str, str]:
        if self.adapters is not None:
            return self.adapters.save(pipe, concepts, folder)
        pipe.save_pretrained(folder / MODEL_FOLDER, safe_serialization=True)
        return {"model": MODEL_FOLDER}
