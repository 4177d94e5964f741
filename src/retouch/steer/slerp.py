"""Spherical interpolation of embeddings, vector by vector along the last dimension."""

from __future__ import annotations

import torch

# Below this |sin(angle)| two directions are (anti-)parallel and the slerp formula divides by ~0.
PARALLEL_EPS = 1e-4


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Interpolate each vector of ``a`` toward ``b`` on the embeddings' shell.

    Every vector along the last dimension (one per token for ``(batch, tokens, dim)`` text
    embeddings) moves its direction along the great circle from ``a``'s to ``b``'s (Shoemake's
    slerp, as in DALL-E 2 section 3.2) while its norm moves linearly, so the path stays at the
    norms the encoder produces instead of cutting through the inside of the shell as ``lerp``
    does. Vectors whose directions are (anti-)parallel, or that are zero, fall back to ``lerp``.

    ``t`` outside [0, 1] extrapolates along the same circle (the norm stops at zero). ``t == 0``
    returns ``a`` and ``t == 1`` returns ``b`` bit for bit.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if t == 0:
        return a.clone()
    if t == 1:
        return b.clone()
    a64, b64 = a.double(), b.double()
    norm_a = a64.norm(dim=-1, keepdim=True)  # (..., 1)
    norm_b = b64.norm(dim=-1, keepdim=True)
    unit_a = a64 / norm_a.clamp_min(torch.finfo(torch.float64).tiny)
    unit_b = b64 / norm_b.clamp_min(torch.finfo(torch.float64).tiny)
    cos = (unit_a * unit_b).sum(dim=-1, keepdim=True).clamp(-1.0, 1.0)
    angle = torch.arccos(cos)
    sin = torch.sin(angle)
    degenerate = (sin.abs() < PARALLEL_EPS) | (norm_a == 0) | (norm_b == 0)
    safe_sin = torch.where(degenerate, torch.ones_like(sin), sin)
    direction = (torch.sin((1 - t) * angle) * unit_a + torch.sin(t * angle) * unit_b) / safe_sin
    norm = ((1 - t) * norm_a + t * norm_b).clamp_min(0.0)
    out = torch.where(degenerate, torch.lerp(a64, b64, t), direction * norm)
    return out.to(a.dtype)
