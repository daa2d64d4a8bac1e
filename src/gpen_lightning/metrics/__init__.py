"""Image-set metrics. ``wasserstein``: the multi-scale sliced Wasserstein distance (no downloaded
network, runs offline anywhere); ``fid``: the Frechet Inception distance on local Inception
weights.

No name bound here shadows a submodule: ``gpen_lightning.metrics.swd`` is the function,
``gpen_lightning.metrics.wasserstein`` and ``gpen_lightning.metrics.fid`` the modules.
"""

from gpen_lightning.metrics.fid import load_fid
from gpen_lightning.metrics.wasserstein import SlicedWassersteinDistance, sliced_wasserstein, swd

__all__ = ["SlicedWassersteinDistance", "load_fid", "sliced_wasserstein", "swd"]
