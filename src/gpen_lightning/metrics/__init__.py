"""Image-set metrics. ``wasserstein``: the multi-scale sliced Wasserstein distance (no downloaded
network, runs offline anywhere); ``fid``: the Frechet Inception distance on local Inception
weights; ``bootstrap``: confidence intervals of per-image scores.

No name bound here shadows a submodule: ``gpen_lightning.metrics.swd`` is the function,
``gpen_lightning.metrics.wasserstein`` and ``gpen_lightning.metrics.fid`` the modules.
"""

from gpen_lightning.metrics.bootstrap import bootstrap_ci, paired_difference
from gpen_lightning.metrics.fid import load_fid
from gpen_lightning.metrics.wasserstein import SlicedWassersteinDistance, sliced_wasserstein, swd

__all__ = [
    "SlicedWassersteinDistance",
    "bootstrap_ci",
    "load_fid",
    "paired_difference",
    "sliced_wasserstein",
    "swd",
]
