"""Seeds of independent random streams derived from one base seed.

``stream_seed(base, index)`` = ``base * STRIDE + index``: one stream per sample (a synthetic face,
a validation degradation), the same whatever the batch size, order or process that draws it.
``STRIDE`` is a prime larger than any index drawn (datasets hold fewer than a million items), so
two (base, index) pairs never share a seed. ``rank_seed(base, rank)`` offsets a process's
training stream under DDP by a prime multiple, so ranks never draw the same degradations.
"""

from __future__ import annotations

__all__ = ["RANK_STRIDE", "STRIDE", "rank_seed", "stream_seed"]

STRIDE = 1_000_003
RANK_STRIDE = 7919


def stream_seed(base: int, index: int) -> int:
    """The seed of item ``index``'s stream under ``base`` (``0 <= index < STRIDE``)."""
    if not 0 <= index < STRIDE:
        raise ValueError(f"index must be in [0, {STRIDE}), got {index}")
    return base * STRIDE + index


def rank_seed(base: int, rank: int) -> int:
    """The training stream of DDP process ``rank`` (rank 0 keeps ``base``)."""
    return base + RANK_STRIDE * rank
