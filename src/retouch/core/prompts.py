"""Prompt checks against the text encoder's tokenizer."""

from __future__ import annotations

import logging

from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


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
