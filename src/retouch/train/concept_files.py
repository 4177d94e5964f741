"""A trained concept's files, in the formats diffusers, AUTOMATIC1111, ComfyUI and kohya load.

- token embeddings: ``learned_embeds.safetensors`` ``{token: (n_vectors, dim)}`` as diffusers'
  Textual Inversion example writes it (``pipe.load_textual_inversion``), and for one token an
  A1111 copy ``{"emb_params": (n_vectors, dim)}`` named after the token;
- LoRA: ``pytorch_lora_weights.safetensors`` as ``StableDiffusionPipeline.save_lora_weights`` writes
  it (``pipe.load_lora_weights``), and a kohya copy (``lora_unet_...``, ``lora_te_...``, ``.alpha``).
  Attention-only adapters get the keys of diffusers' own LoRA examples; adapters on convolutions
  too (LoCon) keep peft's keys, which ``load_lora_weights`` reads as they are (diffusers' conversion
  renames only attention keys, and a file of both spellings loses the attention adapters).

Plus ``TokenTraining``, the trainable-embedding part Textual Inversion and Custom Diffusion share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

from retouch.train.concept_data import ConceptImages
from retouch.train.finetune import LORA_TARGETS, add_token, initial_vectors, new_token_rows, token_vectors

EMBEDDINGS = "learned_embeds.safetensors"
LORA = "pytorch_lora_weights.safetensors"
LORA_KOHYA = "lora_kohya.safetensors"
TEXT_LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")  # diffusers' dreambooth_lora


def save_embeddings(pipe: StableDiffusionPipeline, tokens: Sequence[str], folder: Path) -> dict[str, str]:
    """The tokens' vectors in diffusers' format, plus an A1111 copy when there is one token."""
    vectors = {token: token_vectors(pipe, token).float().contiguous() for token in tokens}
    save_file(vectors, folder / EMBEDDINGS)
    files = {"embeddings": EMBEDDINGS}
    if len(tokens) == 1:
        name = tokens[0].strip("<>") + ".safetensors"  # A1111 names an embedding after its file
        save_file({"emb_params": vectors[tokens[0]]}, folder / name)
        files["embeddings_a1111"] = name
    return files


def save_lora(pipe: StableDiffusionPipeline, folder: Path, text_encoder: bool) -> dict[str, str]:
    """The UNet's (and text encoder's) peft adapters in diffusers' and kohya's formats."""
    from diffusers.utils.state_dict_utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya
    from peft.utils import get_peft_model_state_dict

    unet = get_peft_model_state_dict(pipe.unet, save_embedding_layers=False)
    text = get_peft_model_state_dict(pipe.text_encoder, save_embedding_layers=False) if text_encoder else None
    locon = any(not k.split(".lora_")[0].endswith(LORA_TARGETS) for k in unet)
    diffusers_keys = (lambda state: state) if locon else convert_state_dict_to_diffusers
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=diffusers_keys(unet),
        text_encoder_lora_layers=diffusers_keys(text) if text else None,
        safe_serialization=True,
    )
    peft = {f"unet.{k}": v for k, v in unet.items()} | {f"text_encoder.{k}": v for k, v in (text or {}).items()}
    kohya = {
        k.replace("lora_te1_", "lora_te_"): v.contiguous()  # SD 1.x has one text encoder: kohya's lora_te_
        for k, v in convert_state_dict_to_kohya(peft).items()
    }
    save_file(kohya, folder / LORA_KOHYA)
    return {"lora": LORA, "lora_kohya": LORA_KOHYA}


@dataclass
class TokenTraining:
    """New tokens whose vectors learn while every other row of the embedding table stays as it
    was (the rows are put back after each step, as diffusers' Textual Inversion example does)."""

    init_word: str | None = None  # every new token starts as this word's embedding
    num_vectors: int = 1
    from_class_word: bool = True  # without init_word, start from the concept's class word
    frozen: torch.Tensor | None = field(default=None, repr=False)  # the table before training
    rows: torch.Tensor | None = field(default=None, repr=False)  # (vocab,) bool: the new tokens' rows

    def add(self, pipe: StableDiffusionPipeline, concepts: Sequence[ConceptImages], seed: int) -> torch.nn.Parameter:
        """Add each concept's token (init: ``init_word``, else its class word, else a seeded draw)
        and return the embedding table, which then learns."""
        for i, concept in enumerate(concepts):
            word = self.init_word or (concept.class_word if self.from_class_word else None)
            add_token(pipe, concept.token, initial_vectors(pipe, word, self.num_vectors, seed + i))
        table = pipe.text_encoder.get_input_embeddings().weight
        self.frozen = table.detach().clone()
        self.rows = new_token_rows(pipe, [c.token for c in concepts])
        return table

    def restore(self, pipe: StableDiffusionPipeline) -> None:
        table = pipe.text_encoder.get_input_embeddings().weight
        with torch.no_grad():
            table[~self.rows] = self.frozen[~self.rows]

    def state(self, pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
        return {"token_rows": pipe.text_encoder.get_input_embeddings().weight[self.rows].detach()}

    def load_state(self, pipe: StableDiffusionPipeline, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            pipe.text_encoder.get_input_embeddings().weight[self.rows] = state["token_rows"]
