"""Generator EMA with a half-life counted in images (StyleGAN2-ADA convention)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ema_beta", "update_ema"]


def ema_beta(
    batch: int, *, half_life_kimg: float, images_seen: int = 0, rampup: float | None = None
) -> float:
    """Per-step EMA decay for a global ``batch`` so the weights halve every ``half_life_kimg``.

    ``beta = 0.5 ** (batch / half_life_images)``; 0.997784 for batch 32 and 10 kimg. With
    ``rampup`` (e.g. 0.05) the half-life is capped at ``rampup * images_seen`` so the EMA tracks
    the fast early changes instead of averaging in the random initialisation.
    """
    half_life = half_life_kimg * 1000.0
    if rampup is not None and rampup > 0:
        half_life = min(half_life, images_seen * rampup)
    if half_life <= 0:
        return 0.0
    return 0.5 ** (batch / half_life)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers are copied."""
    ema_params = list(ema.parameters())
    params = [p.detach().to(e.dtype) for p, e in zip(model.parameters(), ema_params, strict=True)]
    torch._foreach_lerp_(ema_params, params, 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)
