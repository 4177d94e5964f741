"""Custom Diffusion (Kumari et al. 2023): learn only the cross-attention key and value projections
and a modifier token per concept, several concepts in one run, with prior preservation.

Every attention layer gets diffusers' ``CustomDiffusionAttnProcessor`` (cross-attention ones with
trainable ``to_k``/``to_v`` copies), as diffusers' ``train_custom_diffusion`` example sets them.
Writes ``pytorch_custom_diffusion_weights.safetensors`` (``unet.save_attn_procs``) and the tokens'
``learned_embeds.safetensors``. ``retouch.train.concept_merge`` merges separately trained ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from diffusers.models.attention_processor import Attention, CustomDiffusionAttnProcessor

from retouch.train.concept_data import ConceptImages
from retouch.train.concept_files import TokenTraining, save_embeddings

WEIGHTS = "pytorch_custom_diffusion_weights.safetensors"


def custom_processors(unet: UNet2DConditionModel) -> dict[str, CustomDiffusionAttnProcessor]:
    """A Custom Diffusion processor for every attention layer of ``unet``: cross-attention ones learn
    copies of the layer's key and value projections (the paper's trained weights), others none."""
    processors = {}
    for name, module in unet.named_modules():
        if not isinstance(module, Attention):
            continue
        cross = module.is_cross_attention
        processor = CustomDiffusionAttnProcessor(
            train_kv=cross,
            train_q_out=False,
            hidden_size=module.to_k.out_features if cross else None,
            cross_attention_dim=module.to_k.in_features if cross else None,
        ).to(unet.device, unet.dtype)
        if cross:
            processor.to_k_custom_diffusion.weight.data.copy_(module.to_k.weight)
            processor.to_v_custom_diffusion.weight.data.copy_(module.to_v.weight)
        processors[f"{name}.processor"] = processor
    return processors


def load_custom_weights(unet: UNet2DConditionModel, state: dict[str, torch.Tensor]) -> None:
    """Set ``custom_processors`` on ``unet`` with the key/value weights of a saved file, as
    ``unet.load_attn_procs`` does for a file that kept the empty entries safetensors drops."""
    processors = custom_processors(unet)
    for name, processor in processors.items():
        weights = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(f"{name}.")}
        if weights:
            processor.load_state_dict(weights)
    unet.set_attn_processor(processors)


@dataclass
class CustomDiffusion:
    """The method's options; the shared loop (``retouch.train.concept``) calls the rest."""

    init_word: str | None = None  # modifier tokens start as this word (default: a seeded draw)
    name: str = "custom-diffusion"
    uses_prior: bool = True
    default_lr: float = 1e-5
    tokens: TokenTraining = field(default_factory=TokenTraining, repr=False)

    def __post_init__(self) -> None:
        self.tokens = TokenTraining(self.init_word, from_class_word=False)

    def options(self) -> dict[str, Any]:
        return {"init_word": self.init_word}

    def prepare(
        self, pipe: StableDiffusionPipeline, concepts: Sequence[ConceptImages], seed: int
    ) -> list[torch.nn.Parameter]:
        table = self.tokens.add(pipe, concepts, seed)
        pipe.unet.set_attn_processor(custom_processors(pipe.unet))
        return [table, *self.kv_parameters(pipe)]

    def kv_parameters(self, pipe: StableDiffusionPipeline) -> list[torch.nn.Parameter]:
        return [p for processor in pipe.unet.attn_processors.values() for p in processor.parameters()]

    def after_step(self, pipe: StableDiffusionPipeline) -> None:
        self.tokens.restore(pipe)

    def state(self, pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
        return {**self.processor_state(pipe), **self.tokens.state(pipe)}

    def processor_state(self, pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": v.detach() for name, processor in pipe.unet.attn_processors.items()
                for k, v in processor.state_dict().items()}

    def load_state(self, pipe: StableDiffusionPipeline, state: dict[str, torch.Tensor]) -> None:
        for name, processor in pipe.unet.attn_processors.items():
            weights = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(f"{name}.")}
            if weights:
                processor.load_state_dict(weights)
        self.tokens.load_state(pipe, state)

    def save(self, pipe: StableDiffusionPipeline, concepts: Sequence[ConceptImages], folder: Path) -> dict[str, str]:
        pipe.unet.save_attn_procs(folder, weight_name=WEIGHTS, safe_serialization=True)
        return {"custom_diffusion": WEIGHTS, **save_embeddings(pipe, [c.token for c in concepts], folder)}
