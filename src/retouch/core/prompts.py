"""Prompt checks against the text encoder's tokenizer."""

from __future__ import annotations

import logging
import re

from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)
CONCEPT_TOKEN_RE = re.compile(r"<[^<>\s:]+>")  # "<star>": a learned concept's token, by convention


def truncated_words(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """The part of ``prompt`` the text encoder never sees ("" when it fits).

    CLIP keeps ``model_max_length`` tokens including its start and end tokens.
    """
    ids = tokenizer(prompt, truncation=False, add_special_tokens=False).input_ids
    kept = tokenizer.model_max_length - tokenizer.num_special_tokens_to_add()
    if len(ids) <= kept:
        return ""
    return tokenizer.decode(ids[kept:]).strip()


def warn_if_truncated(tokenizer: PreTrainedTokenizerBase, prompt: str, what: str = "prompt") -> str:
    """Log a warning naming the cut-off words, and return them."""
    dropped = truncated_words(tokenizer, prompt)
    if dropped:
        logger.warning(
            "%s is longer than the text encoder's %d tokens; these words are cut off: %r",
            what,
            tokenizer.model_max_length,
            dropped,
        )
    return dropped


def unknown_concept_tokens(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[str]:
    """The ``<token>`` words of ``prompt`` that the tokenizer does not hold as one token: no
    embedding or concept defining them is loaded, so the text encoder reads them as characters."""
    vocabulary = tokenizer.get_vocab()
    return [token for token in CONCEPT_TOKEN_RE.findall(prompt) if token not in vocabulary]


def warn_if_unknown_tokens(tokenizer: PreTrainedTokenizerBase, prompt: str, what: str = "prompt") -> list[str]:
    """Log a warning naming the concept tokens no loaded embedding defines (and one for a LoRA tag
    left in the prompt), and return the tokens."""
    if "<lora:" in prompt:
        logger.warning(
            "%s holds a <lora:name:weight> tag, which only the command line (--lora-dir) and batch jobs "
            "(\"lora_dir\") read; in Python take it out with retouch.models.adapter_options.take_lora_tags",
            what,
        )
    unknown = unknown_concept_tokens(tokenizer, prompt)
    if unknown:
        logger.warning(
            "%s names %s, which no loaded embedding or concept defines; pass --concept OUT or --embedding FILE",
            what,
            ", ".join(unknown),
        )
    return unknown
