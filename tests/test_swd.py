"""Multi-scale sliced Wasserstein distance: zero on identical sets, growing with blur and shift."""

from __future__ import annotations

import kornia
import pytest
import torch

from gpen_lightning.data import SyntheticFaces
from gpen_lightning.metrics import SlicedWassersteinDistance, sliced_wasserstein, swd
from gpen_lightning.metrics.wasserstein import patch_descriptors


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    data = SyntheticFaces(size=64, length=32, flip=False)
    return torch.stack([data[i]["hq"] for i in range(32)]).float() / 127.5 - 1


def test_identical_sets_are_at_distance_zero(faces):
    result = swd(faces, faces.clone())
    assert set(result) == {"swd_64", "swd_32", "swd_16", "swd"}  # full resolution down to 16
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in result.values())


def test_distance_grows_monotonically_with_blur(faces):
    values = [
        swd(faces, kornia.filters.gaussian_blur2d(faces, (9, 9), (s, s)))["swd"]
        for s in (0.5, 1.0, 2.0, 3.0)
    ]
    assert values[0] > 1.0
    assert values == sorted(values), values
    # the finest level feels the blur most
    fine = swd(faces, kornia.filters.gaussian_blur2d(faces, (9, 9), (2.0, 2.0)))
    assert fine["swd_64"] > fine["swd_16"]


def test_translated_faces_are_farther_than_identical_ones(faces):
    values = [swd(faces, torch.roll(faces, (k, k), (2, 3)))["swd"] for k in (0, 2, 8)]
    assert values[0] == pytest.approx(0.0, abs=1e-6) and 1.0 < values[1] < values[2]


def test_metric_accumulates_batches_like_one_call(faces):
    metric = SlicedWassersteinDistance(seed=3)
    blurred = kornia.filters.gaussian_blur2d(faces, (5, 5), (1.0, 1.0))
    for chunk, other in zip(faces.split(10), blurred.split(10)):
        metric.update(chunk, real=True)
        metric.update(other, real=False)
    assert metric.compute() == swd(faces, blurred, seed=3)
    metric.reset()
    metric.update(faces, real=True)
    metric.update(faces[:5], real=False)
    with pytest.raises(ValueError, match="as many generated as real"):
        metric.compute()


def test_sliced_wasserstein_of_shifted_gaussians_is_the_mean_projected_shift():
    """Point sets that differ by a constant offset v: every sorted projection differs by <v, d>,
    so the distance is the mean |<v, d>| over the (same) unit directions d."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4096, 3, generator=gen)
    v = torch.tensor([1.0, -2.0, 0.5])
    d = sliced_wasserstein(
        a, a + v, repeats=1, directions=256, generator=torch.Generator().manual_seed(1)
    )
    dirs = torch.randn(3, 256, generator=torch.Generator().manual_seed(1))
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    assert float(d) == pytest.approx(float((v @ dirs).abs().mean()), rel=1e-5)


def test_descriptor_sets_cover_every_level(faces):
    levels = patch_descriptors(faces[:4], per_image=16, generator=torch.Generator().manual_seed(0))
    assert [tuple(x.shape) for x in levels] == [(64, 3, 49)] * 3
