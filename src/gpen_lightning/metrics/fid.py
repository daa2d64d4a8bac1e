"""Frechet Inception distance (Heusel et al. 2017) on local Inception weights.

``load_fid``: torchmetrics' ``FrechetInceptionDistance`` (2048-d pool features) with the
Inception network of torch-fidelity read from ``weights-inception-2015-12-05-6726825d.pth``.
Nothing is downloaded: a missing file raises ``MissingWeightsError`` naming the file and how to
get it.

The evaluation (``metrics.scorer``) uses the parts: ``InceptionFeatures`` (one network for every
set), ``FidStatistics`` (saved and read as ``.npz``), ``frechet_distance`` and ``FeatureCache``
(features of a set cached by its content hash).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from gpen_lightning.io import atomic_save, atomic_write, require_weights

if TYPE_CHECKING:
    from torchmetrics.image.fid import FrechetInceptionDistance

__all__ = [
    "FeatureCache",
    "FidStatistics",
    "InceptionFeatures",
    "frechet_distance",
    "load_fid",
    "load_inception",
]

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


class InceptionFeatures(torch.nn.Module):
    """torch-fidelity's Inception-v3 (the TF FID graph) on local weights: uint8 images
    (B, 3, H, W) -> (B, 2048) pool features, float64. Resized to 299 px as torch-fidelity does
    (TF1 bilinear, no antialiasing), so statistics match the reference FID implementations."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.path = Path(path)
        self.net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048"],
            feature_extractor_weights_path=str(path),
            antialias=False,
        )

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"Inception features take uint8 images, got {images.dtype}")
        return self.net(images).double().reshape(len(images), -1)


def load_inception(path: str | os.PathLike[str] | None) -> InceptionFeatures:
    """``InceptionFeatures`` on the file at ``path``; a missing file raises
    ``MissingWeightsError`` naming it and where to get it."""
    path = require_weights(
        path,
        what="FID",
        how=f"download torch-fidelity's Inception weights ({INCEPTION_URL}) and pass its path "
        "(fid_weights=PATH)",
    )
    return InceptionFeatures(path)


@dataclass
class FidStatistics:
    """The Gaussian of a set's Inception features: ``mu`` (D,), ``sigma`` (D, D), ``n`` images."""

    mu: torch.Tensor
    sigma: torch.Tensor
    n: int

    @classmethod
    def of(cls, features: torch.Tensor) -> FidStatistics:
        """Mean and unbiased covariance of (N, D) features (N >= 2)."""
        x = features.double()
        if len(x) < 2:
            raise ValueError(f"FID needs at least 2 images per set, got {len(x)}")
        return cls(mu=x.mean(0), sigma=torch.cov(x.T), n=len(x))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """``mu``, ``sigma`` (and ``n``) in an ``.npz`` file, the layout pytorch-fid and clean-fid
        read and write; atomically."""
        arrays = {"mu": self.mu.numpy(), "sigma": self.sigma.numpy(), "n": np.array(self.n)}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a path
                np.savez(f, **arrays)

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FidStatistics:
        """Statistics from an ``.npz`` with ``mu`` and ``sigma`` (``n`` optional: 0 if absent)."""
        with np.load(path) as data:
            missing = {"mu", "sigma"} - set(data.files)
            if missing:
                raise ValueError(f"{path} is not an FID statistics file (no {sorted(missing)})")
            n = int(data["n"]) if "n" in data.files else 0
            return cls(torch.from_numpy(data["mu"]), torch.from_numpy(data["sigma"]), n)


def frechet_distance(a: FidStatistics, b: FidStatistics) -> float:
    """``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2)`` in float64; the trace of the matrix
    square root is the sum of the square roots of the eigenvalues of ``S_a S_b``."""
    diff = (a.mu.double() - b.mu.double()).square().sum()
    product = a.sigma.double() @ b.sigma.double()
    root_trace = torch.linalg.eigvals(product).sqrt().real.sum()
    return float(diff + a.sigma.double().trace() + b.sigma.double().trace() - 2 * root_trace)


class FeatureCache:
    """Inception features of image sets on disk, keyed by a content hash of the set (the image
    bytes in order and the Inception file): a set is featurised once, whatever reads it again.

    Args:
        root: the cache folder (created on first write); None: keep nothing.
    """

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root).expanduser() if root else None

    @staticmethod
    def key(images_digest: str, inception: InceptionFeatures) -> str:
        """The cache key of a set whose images hash to ``images_digest``, for ``inception``."""
        stat = inception.path.stat()
        tag = f"{inception.path.name}:{stat.st_size}:{images_digest}"
        return hashlib.sha256(tag.encode()).hexdigest()[:32]

    def get(self, key: str) -> torch.Tensor | None:
        """The cached (N, 2048) features, or None."""
        if self.root is None or not (self.root / f"{key}.pt").is_file():
            return None
        return torch.load(self.root / f"{key}.pt", weights_only=True)

    def put(self, key: str, features: torch.Tensor) -> None:
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_save(features.cpu(), self.root / f"{key}.pt")
