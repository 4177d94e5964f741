"""One entry point for the four personalization methods: folders of pictures in, a concept out.

``personalize(model, "textual-inversion", ["pics/"], ["<star>"], ...)`` reads and checks the
pictures, builds the method with its options and runs the shared loop (``retouch.train.concept``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from retouch.errors import RetouchError
from retouch.models.loading import LoadedModel
from retouch.train.concept import ConceptMethod, ConceptResult, ConceptSettings, StepCallback, train_concept
from retouch.train.concept_data import load_concept_images
from retouch.train.custom_diffusion import CustomDiffusion
from retouch.train.dreambooth import DreamBooth
from retouch.train.lora_concept import LoraConcept
from retouch.train.textual_inversion import TextualInversion

Method = Literal["textual-inversion", "dreambooth", "custom-diffusion", "lora"]
METHODS: tuple[str, ...] = ("textual-inversion", "dreambooth", "custom-diffusion", "lora")


def make_method(
    name: str,
    *,
    init_word: str | None = None,
    num_vectors: int = 1,
    lora: bool = False,
    train_text_encoder: bool | None = None,
    rank: int = 4,
    conv: bool = False,
) -> ConceptMethod:
    """The method ``name`` with its options (the others are ignored)."""
    if name == "textual-inversion":
        return TextualInversion(init_word, num_vectors)
    if name == "dreambooth":
        return DreamBooth(lora, bool(train_text_encoder), rank, conv)
    if name == "custom-diffusion":
        return CustomDiffusion(init_word)
    if name == "lora":
        return LoraConcept(rank, True if train_text_encoder is None else train_text_encoder, init_word=init_word,
                           conv=conv)
    raise RetouchError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")


def personalize(
    model: LoadedModel,
    method: Method,
    images: Sequence[str | os.PathLike[str]],
    tokens: Sequence[str],
    output: str | os.PathLike[str],
    *,
    class_words: Sequence[str | None] = (),
    settings: ConceptSettings | None = None,
    resume: bool = False,
    progress: bool = False,
    on_step: StepCallback | None = None,
    **options: Any,
) -> ConceptResult:
    """Teach ``model`` one concept per (images folder, token[, class word]) with ``method`` and
    write it to ``output``; several concepts only with Custom Diffusion. ``options`` go to
    ``make_method`` (init_word, num_vectors, lora, train_text_encoder, rank, conv)."""
    if method not in METHODS:
        raise RetouchError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if len(images) != len(tokens) or not tokens:
        raise RetouchError(f"give one --images folder per --token (got {len(images)} folders, {len(tokens)} tokens)")
    if len(tokens) > 1 and method != "custom-diffusion":
        raise RetouchError(f"{method} learns one concept a run; several (--token repeated) need custom-diffusion")
    if len(set(tokens)) != len(tokens):
        raise RetouchError(f"the tokens {list(tokens)} repeat one; each concept needs its own")
    if len(class_words) not in (0, 1, len(tokens)):
        raise RetouchError(f"give one --class-word, or one per --token (got {len(class_words)} for {len(tokens)})")
    words = list(class_words) * len(tokens) if len(class_words) == 1 else list(class_words) or [None] * len(tokens)
    settings = settings or ConceptSettings()
    built = make_method(method, **options)
    pipe = model.pipe
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    concepts = [load_concept_images(f, t, w, side) for f, t, w in zip(images, tokens, words, strict=True)]
    return train_concept(model, built, concepts, settings, output, resume=resume, progress=progress, on_step=on_step)
