"""FID's conventions against the references that are project dependencies: the Inception
features against torch-fidelity's own extractor (TF1 bilinear resize, not torchmetrics'
antialiased default) and the Frechet distance on the singular covariances of a small set.
``benchmarks/metric_agreement.py`` measures the same against pytorch-fid and lpips; its stand-in
weights and exact Frechet distance serve here too."""

from __future__ import annotations

import pytest
import torch
from benchmarks.metric_agreement import exact_fid, standin_inception

from gpen_lightning.metrics.fid import FidStatistics, frechet_distance, load_inception


@pytest.fixture(scope="module")
def healthy_inception(tmp_path_factory):
    """The stand-in Inception of the benchmark: He-normal convolutions and random BatchNorm
    statistics. The default init's features vanish (~1e-7); these are O(1) and every tensor
    shapes them."""
    path = tmp_path_factory.mktemp("weights") / "inception-healthy.pth"
    standin_inception(path, seed=4)
    return path


def test_inception_features_equal_torch_fidelity_and_not_the_antialiased_resize(healthy_inception):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torchmetrics.image.fid import NoTrainInceptionV3

    gen = torch.Generator().manual_seed(0)
    smooth = torch.rand(2, 3, 16, 16, generator=gen)
    images = torch.nn.functional.interpolate(smooth, size=128, mode="bicubic")
    images = images.clamp(0, 1).mul(255).round().to(torch.uint8)  # 128 px: resized to 299
    ours = load_inception(healthy_inception)(images)
    assert ours.shape == (2, 2048) and ours.dtype == torch.float64
    assert ours.abs().max() > 0.1 and (ours[0] - ours[1]).abs().max() > 0.01
    name, path = "inception-v3-compat", str(healthy_inception)
    with torch.no_grad():
        ref = FeatureExtractorInceptionV3(name, ["2048"], feature_extractor_weights_path=path)
        torch.testing.assert_close(ours, ref.eval()(images)[0].double(), rtol=0, atol=1e-6)
        antialiased = NoTrainInceptionV3(name, ["2048"], feature_extractor_weights_path=path)
        gap = (ours - antialiased(images).double()).abs().max() / ours.abs().max()
    assert gap > 1e-3  # torchmetrics' default resize is another convention


def test_frechet_distance_is_exact_with_fewer_images_than_dimensions():
    """Rank-deficient covariances, as in every small set (86 faces against 2048 features)."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(40, 512, generator=gen, dtype=torch.float64)
    b = torch.randn(44, 512, generator=gen, dtype=torch.float64) * 1.01 + 0.001
    sa, sb = FidStatistics.of(a), FidStatistics.of(b)
    assert torch.linalg.matrix_rank(sa.sigma) == 39
    exact = exact_fid(a, b)
    assert frechet_distance(sa, sb) == pytest.approx(exact, rel=1e-6)  # float32: 1.4e-3 off
    assert frechet_distance(sa, sa) == pytest.approx(0.0, abs=1e-6 * exact)
