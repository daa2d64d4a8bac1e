"""Gradient hygiene for manual optimization, without reading anything back to the host."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["sanitize_grads", "zero_nonfinite_grads"]


def sanitize_grads(
    params: Iterable[torch.nn.Parameter], *, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Replace NaN/inf gradient entries by 0 in place (as StyleGAN2-ADA does); with ``keep`` (a
    0-d bool tensor) False, zero every gradient, so the optimizer step leaves the parameters as
    they are (Adam with beta1 = 0; with momentum they coast on it).

    Returns how many gradient tensors held a non-finite entry: a 0-d long tensor on their device.
    Branch-free, so a CUDA stream never waits on the host.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), dtype=torch.long)
    # the norm of a tensor is finite iff all its entries are (barring overflow past 3e38)
    norms = torch.stack([n.float() for n in torch._foreach_norm(grads)])
    n_bad = (~torch.isfinite(norms)).sum()
    # a handful of kernels instead of one per tensor: the (contiguous) gradients of a dtype are
    # gathered into one flat buffer, cleaned there and copied back
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for g in grads:
        groups.setdefault(g.dtype, []).append(g)
    for same in groups.values():
        flat = torch.cat([g.reshape(-1) for g in same])
        torch.nan_to_num_(flat, nan=0.0, posinf=0.0, neginf=0.0)
        if keep is not None:
            flat.mul_(keep.to(flat.dtype))
        parts = flat.split([g.numel() for g in same])
        torch._foreach_copy_(same, [v.view(g.shape) for v, g in zip(parts, same)])
    return n_bad


def zero_nonfinite_grads(params: Iterable[torch.nn.Parameter]) -> int:
    """``sanitize_grads`` read back as an int (a host sync: for scripts and tests, not steps)."""
    return int(sanitize_grads(params))
