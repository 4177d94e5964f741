"""slerp: exact endpoints, norms interpolated linearly, directions on the great circle."""

from __future__ import annotations

import math

import pytest
import torch

from retouch.steer.slerp import slerp


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(1, 77, 32, generator=g)  # (batch, tokens, dim), like text embeddings
    b = 3 * torch.randn(1, 77, 32, generator=g)
    return a, b


def test_endpoints_are_exact() -> None:
    a, b = _pair()
    assert torch.equal(slerp(a, b, 0.0), a)
    assert torch.equal(slerp(a, b, 1.0), b)
    assert torch.equal(slerp(a, b, 0), a)
    assert slerp(a, b, 0.0) is not a  # a copy: callers may change it in place


@pytest.mark.parametrize("t", [0.25, 0.5, 0.9])
def test_norm_moves_linearly_token_by_token(t: float) -> None:
    a, b = _pair(1)
    out = slerp(a, b, t)
    expected = (1 - t) * a.norm(dim=-1) + t * b.norm(dim=-1)  # (1, tokens)
    torch.testing.assert_close(out.norm(dim=-1), expected, rtol=1e-5, atol=1e-5)


def test_orthogonal_vectors_follow_the_circle() -> None:
    a = torch.tensor([1.0, 0.0])
    b = torch.tensor([0.0, 3.0])
    out = slerp(a, b, 1 / 3)
    angle = math.degrees(math.atan2(out[1].item(), out[0].item()))
    assert angle == pytest.approx(30.0, abs=1e-4)  # a third of the 90 degree arc
    assert out.norm().item() == pytest.approx(1 + (3 - 1) / 3, abs=1e-5)
    half = slerp(a, b, 0.5)
    torch.testing.assert_close(half, torch.tensor([1.0, 1.0]) * 2 / math.sqrt(2))


def test_each_token_is_interpolated_on_its_own() -> None:
    a, b = _pair(2)
    whole = slerp(a, b, 0.3)
    for token in (0, 5, 76):
        torch.testing.assert_close(whole[0, token], slerp(a[0, token], b[0, token], 0.3))


def test_parallel_antiparallel_and_zero_vectors_fall_back_to_lerp() -> None:
    a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    b = torch.tensor([[2.0, 4.0, 6.0], [-1.0, -2.0, -3.0], [1.0, 1.0, 1.0]])
    out = slerp(a, b, 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.lerp(a, b, 0.5))


def test_extrapolation_continues_the_arc() -> None:
    a = torch.tensor([1.0, 0.0])
    b = torch.tensor([0.0, 1.0])
    out = slerp(a, b, -0.5)
    angle = math.degrees(math.atan2(out[1].item(), out[0].item()))
    assert angle == pytest.approx(-45.0, abs=1e-4)
    assert out.norm().item() == pytest.approx(1.0, abs=1e-6)


def test_dtype_kept_and_shapes_checked() -> None:
    a, b = _pair(3)
    assert slerp(a.half(), b.half(), 0.5).dtype == torch.float16
    with pytest.raises(ValueError, match="one shape"):
        slerp(a, b[:, :10], 0.5)
