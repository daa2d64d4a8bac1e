"""Gradient hygiene for manual optimization."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["zero_nonfinite_grads"]


def zero_nonfinite_grads(params: Iterable[torch.nn.Parameter]) -> int:
    """Replace NaN/inf gradient entries by 0 in place; return how many tensors had any.

    One host sync for the whole set (a stacked finiteness check), then a fix-up pass only when
    something was wrong.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0
    finite = torch.stack([torch.isfinite(g).all() for g in grads])
    n_bad = int((~finite).sum())
    if n_bad:
        for g in grads:
            torch.nan_to_num_(g, nan=0.0, posinf=0.0, neginf=0.0)
    return n_bad
