"""Frechet Inception distance (Heusel et al. 2017) on local Inception weights.

``load_fid``: torchmetrics' ``FrechetInceptionDistance`` (2048-d pool features) with the
Inception network of torch-fidelity read from ``weights-inception-2015-12-05-6726825d.pth``.
Nothing is downloaded: a missing file raises ``MissingWeightsError`` naming the file and how to
get it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from gpen_lightning.io import require_weights

if TYPE_CHECKING:
    from torchmetrics.image.fid import FrechetInceptionDistance

__all__ = ["load_fid"]

INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth"
)


def load_fid(path: str | os.PathLike[str] | None) -> FrechetInceptionDistance:
    """A fresh FID metric on the torch-fidelity Inception weights at ``path``. Feed it images
    (B, 3, H, W) in [0, 1] (``normalize=True``): ``update(hq, real=True)``,
    ``update(out, real=False)``, then ``compute()`` (needs two or more samples of each)."""
    path = require_weights(
        path,
        what="FID",
        how=f"download torch-fidelity's Inception weights ({INCEPTION_URL}) and pass its path "
        "(module.fid_weights=PATH when training, fid_weights=PATH for stage=evaluate)",
    )
    from torchmetrics.image.fid import FrechetInceptionDistance  # torch-fidelity's Inception

    return FrechetInceptionDistance(
        feature=2048, normalize=True, feature_extractor_weights_path=str(path)
    )
