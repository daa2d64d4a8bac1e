"""Random draws keyed to what they are for, not to the process that makes them.

A training run gives the same result whatever the number of processes when every random draw
depends only on the seed, the epoch and the sample's position in the epoch's global order (or, for
a draw shared by a whole minibatch, the global minibatch): never on a process's rank or on how many
draws the process made before. ``mix`` turns such a key into a seed, ``keyed_seeds`` salts a
batch's sample seeds for one kind of draw; ``keyed_normal`` draws one tensor per key on any
device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["MASK63", "keyed_normal", "keyed_seeds", "mix"]

MASK63 = (1 << 63) - 1
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix(*key: int) -> int:
    """A 63-bit seed from a key of integers (SplitMix64 over the values in order): keys that
    differ in any value give unrelated seeds; the same key gives the same seed on every process,
    machine and Python run (no ``hash`` salting)."""
    x = 0
    for value in key:
        x = _splitmix64(x ^ (int(value) & _MASK64))
    return x & MASK63


def keyed_seeds(seeds: Sequence[int] | None, salt: int, n: int | None = None) -> list[int] | None:
    """``mix(seed, salt)`` of the first ``n`` (default all) sample seeds of a batch: the keys of
    one kind of draw (None for a batch without keys)."""
    return None if seeds is None else [mix(s, salt) for s in seeds[:n]]


def keyed_normal(
    seeds: Sequence[int],
    shapes: Sequence[tuple[int, ...]],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Standard normal tensors, one batch per entry of ``shapes``: ``out[j][i]`` (shape
    ``shapes[j]``) is the ``j``-th draw of a generator seeded with ``seeds[i]``, so sample ``i``'s
    values do not depend on which other samples share its batch. Drawn on ``device`` (its own
    generator; nothing moves between host and device); the ``meta`` device draws nothing."""
    device = torch.device(device)
    if device.type == "meta" or len(seeds) == 0:
        return [torch.empty(len(seeds), *s, device=device, dtype=dtype) for s in shapes]
    gen = torch.Generator(device=device)
    per_sample = []
    for seed in seeds:
        gen.manual_seed(int(seed))
        per_sample.append(
            [torch.randn(s, generator=gen, device=device, dtype=dtype) for s in shapes]
        )
    return [torch.stack(draws) for draws in zip(*per_sample)]
