"""Prompt weighting in AUTOMATIC1111's syntax, with the embeddings' mean restored as A1111 does.

    (word)       weight x 1.1        ((word))   x 1.21         (word:1.3)   x 1.3
    [word]       weight / 1.1        \\( \\) \\[ \\] \\\\   the literal character

Brackets nest and multiply; an unclosed bracket weights to the end of the prompt; a closing
bracket with nothing open is plain text. The syntax and its semantics are AUTOMATIC1111's
(stable-diffusion-webui, ``modules/prompt_parser.py``: ``parse_prompt_attention``, and
``modules/sd_hijack_clip.py`` for the mean restoration); this is a separate implementation.
``compel`` was considered but parses its own syntax (``word++``, ``(word)1.3``), not this one.
A1111's ``BREAK`` keyword and prompts longer than one 75-token chunk are not supported: the
tokens past the encoder's limit are cut, as the plain pipeline does.
"""

from __future__ import annotations

import re

import torch
from diffusers import StableDiffusionPipeline
from diffusers.loaders import TextualInversionLoaderMixin

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
MEAN_TOLERANCE = 1e-4  # a mean below this fraction of the mean |value| is taken as zero

_TOKEN_RE = re.compile(
    r"""
      \\(?P<escaped>[()\[\]\\])?                      # \( \) \[ \] \\ ; a lone backslash is dropped
    | (?P<open>[(\[])
    | :\s*(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+))\s*\)   # ":1.3)" closes a round bracket with a weight
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+|:)
    """,
    re.VERBOSE,
)


def parse_prompt_attention(prompt: str) -> list[tuple[str, float]]:
    """Split ``prompt`` into ``(text, weight)`` runs; neighbouring runs of one weight are merged.

    >>> parse_prompt_attention("a (red:1.5) circle on a [blue] background")
    [('a ', 1.0), ('red', 1.5), (' circle on a ', 1.0), ('blue', 0.9090909090909091), (' background', 1.0)]
    """
    runs: list[list] = []  # [text, weight], weights multiplied in place as brackets close
    open_round: list[int] = []  # index into runs where each open "(" began
    open_square: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for run in runs[start:]:
            run[1] *= factor

    for match in _TOKEN_RE.finditer(prompt):
        token, weight = match.group(0), match.group("weight")
        if token.startswith("\\"):
            runs.append([match.group("escaped") or "", 1.0])
        elif token == "(":
            open_round.append(len(runs))
        elif token == "[":
            open_square.append(len(runs))
        elif weight is not None and open_round:
            multiply(open_round.pop(), float(weight))
        elif token == ")" and open_round:
            multiply(open_round.pop(), ROUND_MULTIPLIER)
        elif token == "]" and open_square:
            multiply(open_square.pop(), SQUARE_MULTIPLIER)
        else:
            runs.append([token, 1.0])
    for start in open_round:
        multiply(start, ROUND_MULTIPLIER)
    for start in open_square:
        multiply(start, SQUARE_MULTIPLIER)

    merged: list[tuple[str, float]] = []
    for text, weight in runs:
        if not text:
            continue
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + text, weight)
        else:
            merged.append((text, weight))
    return merged or [("", 1.0)]


def has_weighting(prompt: str) -> bool:
    """Whether ``prompt`` uses any weighting or escape syntax (else it is encoded as is)."""
    return parse_prompt_attention(prompt) != [(prompt, 1.0)]


def prompt_text(prompt: str) -> str:
    """``prompt`` with the weighting syntax taken out: the words the text encoder sees."""
    return "".join(text for text, _ in parse_prompt_attention(prompt))


@torch.no_grad()
def encode_weighted_prompt(pipe: StableDiffusionPipeline, prompt: str) -> torch.Tensor:
    """The text encoder's last hidden states for ``prompt``, weighted, ``(1, tokens, dim)``.

    A prompt without weighting syntax gets exactly what ``pipe.encode_prompt`` computes, so
    passing the result as ``prompt_embeds`` reproduces the plain pipeline bit for bit.
    Callers warn about truncation with ``warn_if_truncated(tokenizer, prompt_text(prompt))``.
    """
    if not has_weighting(prompt):
        prompt_embeds, _ = pipe.encode_prompt(prompt, pipe._execution_device, 1, False)
        return prompt_embeds
    return encode_runs(pipe, parse_prompt_attention(prompt))


def encode_if_weighted(pipe: StableDiffusionPipeline, prompt: str) -> torch.Tensor | None:
    """``encode_weighted_prompt`` for a prompt with weighting syntax; ``None`` (let the pipeline
    encode it) for any other, e.g. a negative prompt."""
    return encode_weighted_prompt(pipe, prompt) if has_weighting(prompt) else None


@torch.no_grad()
def encode_runs(pipe: StableDiffusionPipeline, runs: list[tuple[str, float]]) -> torch.Tensor:
    """Encode ``(text, weight)`` runs: scale each token's hidden state by its weight, then rescale
    the whole tensor so that its mean is the unweighted one (A1111, ``sd_hijack_clip.py``).

    Unlike A1111, the rescale is skipped when it would be meaningless: the unweighted mean is ~0
    (below ``MEAN_TOLERANCE`` of the mean absolute value), or the weights flip its sign.
    """
    tokenizer, device = pipe.tokenizer, pipe._execution_device
    ids: list[int] = []
    weights: list[float] = []
    for text, weight in runs:
        if isinstance(pipe, TextualInversionLoaderMixin):
            text = pipe.maybe_convert_prompt(text, tokenizer)
        piece = tokenizer(text, add_special_tokens=False, truncation=False).input_ids
        ids += piece
        weights += [weight] * len(piece)
    kept = tokenizer.model_max_length - 2  # room for the start and end tokens
    ids, weights = ids[:kept], weights[:kept]
    padding = kept - len(ids)
    input_ids = torch.tensor(
        [[tokenizer.bos_token_id, *ids, tokenizer.eos_token_id, *[tokenizer.pad_token_id] * padding]]
    )  # (1, tokens), laid out as tokenizer(padding="max_length") lays it out
    attention_mask = None  # as encode_prompt: only for encoders configured to take one
    if getattr(pipe.text_encoder.config, "use_attention_mask", False):
        attention_mask = (torch.arange(input_ids.shape[1]) < len(ids) + 2).long()[None].to(device)
    hidden = pipe.text_encoder(input_ids.to(device), attention_mask=attention_mask)[0]  # (1, tokens, dim)

    if any(weight != 1.0 for weight in weights):
        multipliers = torch.tensor([1.0, *weights, 1.0, *[1.0] * padding], device=device)  # (tokens,)
        z = hidden.float()
        weighted = z * multipliers[None, :, None]
        original_mean, weighted_mean = z.double().mean(), weighted.double().mean()
        # With no mean to restore (a final LayerNorm without bias centres every token on ~0, as in
        # random test models) the ratio is rounding noise over rounding noise: keep the weights.
        has_mean = original_mean.abs() > MEAN_TOLERANCE * z.double().abs().mean()
        ratio = original_mean / weighted_mean
        hidden = weighted * ratio.float() if has_mean and ratio.isfinite() and ratio > 0 else weighted
    return hidden.to(dtype=pipe.text_encoder.dtype, device=device)
