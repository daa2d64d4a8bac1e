"""A GAN prior's samples against faces: the multi-scale sliced Wasserstein distance."""

from __future__ import annotations

import torch

from gpen_lightning.data.datamodule import stack_faces
from gpen_lightning.metrics import swd
from gpen_lightning.ranges import to_unit
from gpen_lightning.zoo.generator import Generator

__all__ = ["evaluate_prior"]


@torch.no_grad()
def evaluate_prior(
    prior: Generator,
    dataset,
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    seed: int = 1234,
    n_grid: int = 8,
) -> tuple[dict[str, dict[str, float]], torch.Tensor]:
    """A GAN prior's samples against the faces of ``dataset`` (as many as it holds): the
    multi-scale sliced Wasserstein distance x 1e3. Returns ``({"prior": scores}, grid)``, the
    grid holding ``n_grid`` samples next to ``n_grid`` faces."""
    device = torch.device(device)
    prior = prior.to(device).eval()
    if prior.size != dataset[0]["hq"].shape[-1]:
        raise ValueError(f"the prior is {prior.size} px but the faces are not")
    reals = stack_faces(dataset)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(len(reals), prior.style_dim, generator=gen).to(device)
    fakes = torch.cat([prior(chunk).float().clamp(-1, 1).cpu() for chunk in z.split(batch_size)])
    table = {"prior": swd(reals, fakes, seed=seed)}
    grid = to_unit(torch.cat([fakes[:n_grid], reals[:n_grid]]))
    return table, grid
