"""Gradient hygiene and the cross-process gradient mean of manual optimization, without reading
anything back to the host."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist

__all__ = ["sanitize_grads", "world_size"]


def world_size() -> int:
    """Processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def sanitize_grads(
    params: Iterable[torch.nn.Parameter],
    *,
    keep: torch.Tensor | None = None,
    average: bool = False,
    clean: bool = True,
) -> torch.Tensor:
    """Average the gradients over processes and replace their NaN/inf entries by 0, in place.

    The gradients of each dtype are gathered into one flat buffer, worked on there and copied
    back: a handful of kernels instead of one per tensor, and one collective per phase (as
    StyleGAN2-ADA/3 do), carrying exactly the gradients of the network the phase trains.

    Args:
        params: the parameters of the network a phase trains.
        keep: a 0-d bool tensor; False zeroes every gradient, so the optimizer step leaves the
            parameters as they are (Adam with beta1 = 0; with momentum they coast on it).
        average: when several processes run, all-reduce the gradients to their mean first (every
            parameter that requires grad takes part, a missing gradient as zeros, so every
            process sends the same layout).
        clean: zero the non-finite entries (False under 16-mixed: the GradScaler skips a
            non-finite step itself, and needs to see the infs).

    Returns how many gradient tensors held a non-finite entry (after averaging: the same on
    every process): a 0-d long tensor on their device. Branch-free, so a CUDA stream never
    waits on the host.
    """
    n_proc = world_size() if average else 1
    if not clean and n_proc == 1:  # nothing to average, nothing to clean
        return torch.zeros((), dtype=torch.long)
    params = [p for p in params if p.grad is not None or (n_proc > 1 and p.requires_grad)]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    if not grads:
        return torch.zeros((), dtype=torch.long)
    n_bad = torch.zeros((), dtype=torch.long, device=grads[0].device)
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for g in grads:
        groups.setdefault(g.dtype, []).append(g)
    for same in groups.values():
        flat = torch.cat([g.reshape(-1) for g in same])
        if n_proc > 1:
            dist.all_reduce(flat)
            flat.div_(n_proc)
        parts = flat.split([g.numel() for g in same])
        # the norm of a tensor is finite iff all its entries are (barring overflow past 3e38)
        norms = torch.stack([n.float() for n in torch._foreach_norm(list(parts))])
        n_bad = n_bad + (~torch.isfinite(norms)).sum()
        if clean:
            torch.nan_to_num_(flat, nan=0.0, posinf=0.0, neginf=0.0)
            if keep is not None:
                flat.mul_(keep.to(flat.dtype))
        torch._foreach_copy_(same, [v.view(g.shape) for v, g in zip(parts, same)])
    return n_bad
