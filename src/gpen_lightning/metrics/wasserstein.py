"""Multi-scale sliced Wasserstein distance (Karras et al. 2018, Progressive GAN, section 5).

Both image sets are decomposed into Laplacian pyramids (full resolution down to 16x16); at every
level random 7x7 neighbourhoods are cut from each image, each set's descriptors are normalised
per channel, and the sliced Wasserstein distance between the two descriptor sets is estimated
with random projections. Reported x 1e3 per level (``swd_<res>``) and averaged (``swd``), as in
the paper. A GAN-quality metric with no pretrained network, so it runs offline anywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry.transform import build_laplacian_pyramid
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["SlicedWassersteinDistance", "patch_descriptors", "sliced_wasserstein", "swd"]


def patch_descriptors(
    images: torch.Tensor,
    *,
    per_image: int = 128,
    patch: int = 7,
    min_res: int = 16,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """Images (B, C, S, S) in [-1, 1] -> one (B * per_image, C * patch^2) descriptor set per
    Laplacian-pyramid level, full resolution first (the coarsest level is the Gaussian residual,
    at ``min_res``)."""
    x = images.float()
    levels = 1  # full resolution, then halved while the size stays >= min_res
    while x.shape[-1] // 2**levels >= min_res:
        levels += 1
    pyramid = build_laplacian_pyramid(x, levels)
    out = []
    for level in pyramid:
        b, c, h, w = level.shape
        ys = torch.randint(0, h - patch + 1, (b, per_image), generator=generator)
        xs = torch.randint(0, w - patch + 1, (b, per_image), generator=generator)
        # all patches of each image, then the sampled positions: (B, C*p*p, L) -> picks
        cols = F.unfold(level, patch)  # (B, C*p*p, (h-p+1)*(w-p+1))
        idx = (ys * (w - patch + 1) + xs).to(level.device)
        picked = torch.gather(cols, 2, idx[:, None, :].expand(-1, cols.shape[1], -1))
        out.append(picked.permute(0, 2, 1).reshape(b * per_image, c, patch * patch))
    return out


def _normalise(desc: torch.Tensor) -> torch.Tensor:
    """Per-channel zero mean, unit std over the whole set; flattened to (N, C * p^2)."""
    desc = desc - desc.mean(dim=(0, 2), keepdim=True)
    desc = desc / desc.std(dim=(0, 2), keepdim=True).clamp_min(1e-8)
    return desc.flatten(1)


def sliced_wasserstein(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    repeats: int = 4,
    directions: int = 128,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sliced Wasserstein distance between point sets a (N, D) and b (N, D): the mean over
    ``repeats * directions`` random unit directions of the mean |sorted projection difference|."""
    if a.shape != b.shape:
        raise ValueError(
            f"the two descriptor sets must have the same shape: {a.shape} vs {b.shape}"
        )
    results = []
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], directions, generator=generator).to(a)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        pa, _ = (a @ dirs).sort(dim=0)
        pb, _ = (b @ dirs).sort(dim=0)
        results.append((pa - pb).abs().mean())
    return torch.stack(results).mean()


def swd(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    per_image: int = 128,
    seed: int = 0,
) -> dict[str, float]:
    """SWD x 1e3 per level (``swd_<res>``, full resolution first) and their mean (``swd``) between
    two image batches (B, C, S, S) in [-1, 1] of the same shape."""
    metric = SlicedWassersteinDistance(per_image=per_image, seed=seed)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return metric.compute()


class SlicedWassersteinDistance(Metric):
    """Accumulates descriptors of real and generated images over batches (torchmetrics
    ``Metric``: states gathered across DDP processes); ``compute()`` returns the per-level and
    average SWD x 1e3. Both sides must end with the same number of images.

    Args:
        per_image: neighbourhoods sampled per image and level (ProGAN: 128).
        seed: seeds the patch positions and the projection directions (same seed, same value).
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, *, per_image: int = 128, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.per_image, self.seed = per_image, seed
        self.add_state("real", default=[], dist_reduce_fx="cat")
        self.add_state("fake", default=[], dist_reduce_fx="cat")

    def update(self, images: torch.Tensor, *, real: bool) -> None:
        getattr(self, "real" if real else "fake").append(images.detach().float().cpu())

    def compute(self) -> dict[str, float]:
        # the states: lists of batches, one tensor once gathered across processes; empty: refused
        real, fake = (dim_zero_cat(s) if len(s) else torch.zeros(0) for s in (self.real, self.fake))
        if real.shape != fake.shape or len(real) == 0:
            raise ValueError(
                f"SWD needs as many generated as real images of one size: {tuple(real.shape)} "
                f"real vs {tuple(fake.shape)} generated"
            )
        gen = torch.Generator().manual_seed(self.seed)
        a = patch_descriptors(real, per_image=self.per_image, generator=gen)
        gen = torch.Generator().manual_seed(self.seed)  # the same positions in both sets
        b = patch_descriptors(fake, per_image=self.per_image, generator=gen)
        out, size = {}, real.shape[-1]
        for level, (da, db) in enumerate(zip(a, b)):
            gen = torch.Generator().manual_seed(self.seed + 1 + level)
            d = sliced_wasserstein(_normalise(da), _normalise(db), generator=gen)
            out[f"swd_{size // 2**level}"] = float(d) * 1e3
        out["swd"] = sum(out.values()) / len(out)
        return out
