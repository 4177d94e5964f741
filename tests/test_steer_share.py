"""Prompt-to-prompt's shared cross-attention maps: the processor's arithmetic and its install."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor

from retouch.models.tiny import tiny_pipeline
from retouch.steer.interpolate import interpolate
from retouch.steer.share import SharedClock, SharedCrossAttnProcessor, shared_cross_attention

A, B = "a small red circle on a blue background", "a small red circle on a green background"


def _attention() -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4)


def _maps(attn: Attention, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Softmax attention maps (heads, queries, tokens) of one batch item."""
    q = attn.head_to_batch_dim(attn.to_q(queries[None]))
    k = attn.head_to_batch_dim(attn.to_k(context[None]))
    return attn.get_attention_scores(q, k)


@torch.no_grad()
def test_the_frame_attends_with_the_source_maps_while_the_clock_runs() -> None:
    attn = _attention()
    queries = torch.randn(5, 8)  # one picture's 5 positions, the same in both items
    contexts = torch.randn(2, 3, 6)  # prompt A's tokens, then the frame's
    hidden = torch.stack([queries, queries])
    clock = SharedClock(until=1)
    attn.set_processor(SharedCrossAttnProcessor(clock))
    shared = attn(hidden, encoder_hidden_states=contexts)

    # item 1 = A's maps applied to the frame's own values
    value = attn.head_to_batch_dim(attn.to_v(contexts[1:]))
    expected = attn.to_out[0](attn.batch_to_head_dim(torch.bmm(_maps(attn, queries, contexts[0]), value)))
    torch.testing.assert_close(shared[1], expected[0])
    plain = AttnProcessor()(attn, hidden, encoder_hidden_states=contexts)
    torch.testing.assert_close(shared[0], plain[0])  # the source itself is untouched
    assert not torch.allclose(shared[1], plain[1])  # the frame's own maps differ from A's

    clock.step = 1  # past `until`: the processor is diffusers' own arithmetic
    torch.testing.assert_close(attn(hidden, encoder_hidden_states=contexts), plain)


def test_only_cross_attention_is_replaced_and_everything_is_put_back() -> None:
    unet = tiny_pipeline().unet
    before = unet.attn_processors
    clock = SharedClock(until=3)
    with pytest.raises(RuntimeError, match="inside"), shared_cross_attention(unet, clock):
        during = unet.attn_processors
        shared = [name for name, p in during.items() if isinstance(p, SharedCrossAttnProcessor)]
        assert shared and all(name.endswith("attn2.processor") for name in shared)  # cross-attention
        assert all(during[name] is before[name] for name in during if name not in shared)
        raise RuntimeError("inside")
    assert unet.attn_processors == before


def test_clock_counts_the_steps() -> None:
    clock = SharedClock(until=2)
    callback = clock.callback()
    assert clock.active
    callback(None, 0, None, {})
    assert clock.active and clock.step == 1
    callback(None, 1, None, {})
    assert not clock.active


def test_hold_common_frames_take_the_first_prompts_maps(monkeypatch) -> None:
    import retouch.steer.interpolate as module

    pipe = tiny_pipeline()
    kwargs = {"seed": 3, "steps": 3, "scheduler": "euler", "frames": 3}
    width, height = interpolate(pipe, A, B, frame=0, **kwargs).images[0].size
    monkeypatch.setattr(module, "changing_region", lambda *args: np.ones((height, width), dtype=bool))
    plain = interpolate(pipe, A, B, **kwargs)
    held = interpolate(pipe, A, B, hold_common=1.0, **kwargs)  # every pixel the frame's own
    assert np.array_equal(np.asarray(held.images[0]), np.asarray(plain.images[0]))
    assert not np.array_equal(np.asarray(held.images[2]), np.asarray(plain.images[2]))  # A's maps
    sharing = []
    original = module.shared_cross_attention

    def recording(unet, clock):
        sharing.append(clock)
        return original(unet, clock)

    monkeypatch.setattr(module, "shared_cross_attention", recording)
    interpolate(pipe, A, B, hold_common=1 / 3, **kwargs)
    assert [clock.until for clock in sharing] == [1, 1]  # frames 1 and 2, for a third of 3 steps
    assert all(clock.step == 3 for clock in sharing)
