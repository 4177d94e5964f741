"""Textual Inversion (Gal et al. 2022): learn a new token's embedding, the model frozen.

The token is added to the tokenizer (``add_tokens``; ``--num-vectors`` > 1 adds ``<t>_1`` ... as
diffusers does) and only its rows of the text encoder's embedding table learn. Writes
``learned_embeds.safetensors`` (``pipe.load_textual_inversion``) and an A1111 copy.
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
from retouch.train.concept_files import TokenTraining, save_embeddings

MAX_VECTORS = 16


@dataclass
class TextualInversion:
    """The method's options; the shared loop (``retouch.train.concept``) calls the rest."""

    init_word: str | None = None  # the token starts as this word (default: the class word)
    num_vectors: int = 1  # vectors per token (Gal et al. use 1; more capture more detail)
    name: str = "textual-inversion"
    uses_prior: bool = False
    default_lr: float = 5e-3
    tokens: TokenTraining = field(default_factory=TokenTraining, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.num_vectors <= MAX_VECTORS:
            raise RetouchError(f"--num-vectors must be 1 to {MAX_VECTORS}, got {self.num_vectors}")
        self.tokens = TokenTraining(self.init_word, self.num_vectors)

    def options(self) -> dict[str, Any]:
        return {"init_word": self.init_word, "num_vectors": self.num_vectors}

    def prepare(
        self, pipe: StableDiffusionPipeline, concepts: Sequence[ConceptImages], seed: int
    ) -> list[torch.nn.Parameter]:
        return [self.tokens.add(pipe, concepts, seed)]

    def after_step(self, pipe: StableDiffusionPipeline) -> None:
        self.tokens.restore(pipe)

    def state(self, pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
        return self.tokens.state(pipe)

    def load_state(self, pipe: StableDiffusionPipeline, state: dict[str, torch.Tensor]) -> None:
        self.tokens.load_state(pipe, state)

    def save(self, pipe: StableDiffusionPipeline, concepts: Sequence[ConceptImages], folder: Path) -> dict[str, str]:
        return save_embeddings(pipe, [c.token for c in concepts], folder)
