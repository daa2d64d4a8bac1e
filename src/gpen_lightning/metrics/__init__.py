"""Metrics that need no downloaded network: the multi-scale sliced Wasserstein distance."""

from gpen_lightning.metrics.wasserstein import SlicedWassersteinDistance, sliced_wasserstein, swd

__all__ = ["SlicedWassersteinDistance", "sliced_wasserstein", "swd"]
