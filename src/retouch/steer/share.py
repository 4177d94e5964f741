"""Share the first prompt's cross-attention maps with every frame (prompt-to-prompt).

In a text-to-image UNet, where each word lands in the picture is its cross-attention map: the
softmax of the picture's queries against the words' keys. Prompt-to-prompt (Hertz et al. 2022,
section 3.2) edits a picture by sampling the edited prompt beside the source one and giving it
the source's maps for the first steps, so the layout (where the object is, what shape it has) is
the source's while the words' values (its colours) are the edited prompt's.

Here every interpolation frame is sampled in one batch with prompt A (the same initial latents),
and while ``SharedClock.active`` each frame's cross-attention maps are replaced by prompt A's,
layer by layer and step by step. Prompts of the same token count line up word for word (the
"word swap" case of the paper); the maps are the same shape whatever the words. Self-attention
is left to the model's own processors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention


@dataclass
class SharedClock:
    """Counts the sampling steps; the maps are shared while ``step < until``."""

    until: int
    step: int = 0

    @property
    def active(self) -> bool:
        return self.step < self.until

    def callback(self) -> Callable[..., dict]:
        """A ``callback_on_step_end`` that advances the clock after every step."""

        def advance(pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
            self.step = step_index + 1
            return callback_kwargs

        return advance


class SharedCrossAttnProcessor:
    """Cross-attention (diffusers' ``AttnProcessor`` arithmetic) in which, while ``clock`` is
    active, the odd batch items take the maps of the even item before them: the pipeline's batch
    is ``[A, frame]`` per guidance half, so each frame attends as prompt A does."""

    def __init__(self, clock: SharedClock) -> None:
        self.clock = clock

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:  # (batch, channels, height, width) -> (batch, height * width, channels)
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, queries, _ = hidden_states.shape
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)

        query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (batch * heads, queries, dim)
        key = attn.head_to_batch_dim(attn.to_k(context))  # (batch * heads, tokens, dim)
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)  # (batch * heads, queries, tokens)
        if self.clock.active and batch_size % 2 == 0:
            maps = probs.view(batch_size, attn.heads, queries, -1).clone()
            maps[1::2] = maps[0::2]
            probs = maps.view(batch_size * attn.heads, queries, -1)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))  # linear, dropout

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def shared_cross_attention(unet: UNet2DConditionModel, clock: SharedClock) -> Iterator[None]:
    """Within the block, ``unet``'s cross-attention layers share maps as ``clock`` says; its
    processors (self-attention's included) are put back afterwards, even on error."""
    saved = unet.attn_processors
    cross = {
        f"{name}.processor"
        for name, module in unet.named_modules()
        if isinstance(module, Attention) and module.is_cross_attention
    }
    shared = SharedCrossAttnProcessor(clock)
    unet.set_attn_processor({name: shared if name in cross else p for name, p in saved.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(saved)
