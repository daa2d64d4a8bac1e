"""Seeds of independent random streams derived from one base seed.

``stream_seed(base, index)`` = ``base * STRIDE + index``: one stream per sample (a synthetic face,
a validation degradation), the same whatever the batch size, order or process that draws it.
``STRIDE`` is a prime larger than any index drawn (datasets hold fewer than a million items), so
two (base, index) pairs never share a seed. (Training draws are keyed by position in the global
sample order instead: ``data.sampler`` and ``gpen_lightning.keyed``.)
"""

from __future__ import annotations

__all__ = ["STRIDE", "stream_seed"]

STRIDE = 1_000_003


def stream_seed(base: int, index: int) -> int:
    """The seed of item ``index``'s stream under ``base`` (``0 <= index < STRIDE``)."""
    if not 0 <= index < STRIDE:
        raise ValueError(f"index must be in [0, {STRIDE}), got {index}")
    return base * STRIDE + index
