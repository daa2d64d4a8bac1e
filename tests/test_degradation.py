"""Degradation ops: measured effects, per-sample independence, reproducibility, dtypes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from gpen_lightning.data.degradation import Degradation
from gpen_lightning.data.kernels import gaussian_kernels, motion_kernels

CONF = Path(__file__).resolve().parents[1] / "conf"
OFF = dict(blur_probs=None, downsample=None, noise=None, jpeg=None, gray_prob=0.0)


def only(**kw) -> Degradation:
    """One op on, its ranges in pixels at every size (the ops' own behaviour)."""
    return Degradation(**{**OFF, "reference_size": None, **kw})


def high_freq_energy(x: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Fraction of spectral energy above ``cutoff`` cycles/pixel (radial), per sample."""
    x = x.float().mean(1)
    x = x - x.mean((1, 2), keepdim=True)
    spec = torch.fft.fft2(x).abs().square()
    f = torch.fft.fftfreq(x.shape[-1])
    radius = torch.hypot(f[:, None], f[None, :])
    return (spec * (radius > cutoff)).sum((1, 2)) / spec.sum((1, 2))


def test_kernels_normalised_and_shaped():
    k = gaussian_kernels(torch.tensor([1.0, 4.0]), torch.tensor([1.0, 1.0]), torch.zeros(2), 21)
    assert k.shape == (2, 21, 21)
    torch.testing.assert_close(k.sum((1, 2)), torch.ones(2))
    # sigma_x = 4 along x, 1 along y: wider in x
    assert k[1, 10, :].std() < k[0, 10, :].std() or k[1, 10, 14] > k[1, 14, 10]
    rot = gaussian_kernels(
        torch.tensor([4.0]), torch.tensor([1.0]), torch.tensor([math.pi / 2]), 21
    )
    torch.testing.assert_close(rot[0], k[1].t(), atol=1e-6, rtol=0)
    m = motion_kernels(torch.tensor([11.0]), torch.tensor([0.0]), 21)
    assert m[0, 10].sum() > 0.9  # a horizontal line through the centre row


def test_blur_lowers_high_frequencies_more_with_larger_sigma():
    x = torch.rand(1, 3, 96, 96).repeat(3, 1, 1, 1)
    d = only(blur_probs=(1.0, 0.0, 0.0), sigma=(0.5, 4.0))
    params = d.sample_params(3)
    params["sigma_x"] = params["sigma_y"] = torch.tensor([0.5, 1.5, 4.0])
    out = d(x, params=params, seed=0)["lq"]
    e = high_freq_energy(out, 0.1)
    e0 = high_freq_energy(x[:1], 0.1)
    assert e0 > e[0] > e[1] > e[2]
    assert e[2] < 0.1 * e0  # sigma 4 passes ~exp(-2 pi^2 16 0.01)^2 of the energy at 0.1


@pytest.mark.parametrize("scale", [2.0, 4.0])
def test_downsample_removes_detail_above_lowres_nyquist(scale):
    x = torch.rand(2, 3, 128, 128)
    d = only(downsample=(scale, scale))
    out = d(x, seed=0)["lq"]
    nyquist = 0.5 / scale
    assert out.shape == x.shape
    before, after = high_freq_energy(x, nyquist), high_freq_energy(out, nyquist)
    assert torch.all(before > 0.6)  # white noise: most energy is high-frequency
    assert torch.all(after < 0.2 * before)


def test_noise_std_matches_sigma():
    x = torch.full((4, 3, 64, 64), 0.5)
    d = only(noise=(10.0, 10.0))
    out = d(x, seed=0)["lq"]
    std = (out - x).std((1, 2, 3)) * 255
    assert torch.all((std - 10).abs() < 1.0), std


def _blockiness(x: torch.Tensor) -> float:
    """Mean |horizontal gradient| on 8x8 block boundaries over that inside blocks."""
    g = (x[..., 1:] - x[..., :-1]).abs().mean((0, 1, 2))
    cols = torch.arange(g.shape[0])
    boundary = (cols % 8) == 7
    return (g[boundary].mean() / g[~boundary].mean()).item()


def test_lower_jpeg_quality_gives_larger_error_and_blockiness():
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 16, 16), size=128, mode="bicubic")
    x = (smooth + 0.05 * torch.rand(2, 3, 128, 128)).clamp(0, 1)
    errors, blocks = [], []
    for q in (90.0, 50.0, 10.0):
        out = only(jpeg=(q, q))(x, seed=0)["lq"]
        errors.append((out - x).abs().mean().item())
        blocks.append(_blockiness(out))
    assert errors[0] < errors[1] < errors[2]
    assert blocks[2] > blocks[0] and blocks[2] > 1.5


def test_grayscale_equal_channels_on_lq_and_hq():
    x = torch.rand(4, 3, 32, 32)
    out = only(gray_prob=1.0)(x, seed=0)
    for key in ("lq", "hq"):
        assert torch.equal(out[key][:, 0], out[key][:, 1])
        assert torch.equal(out[key][:, 1], out[key][:, 2])
    col = Degradation(**{**OFF, "task": "colorization"})(x, seed=0)
    assert torch.equal(col["lq"][:, 0], col["lq"][:, 2]) and torch.equal(col["hq"], x)


def test_inpainting_mask_fraction_in_range():
    x = torch.zeros(6, 3, 128, 128)
    out = Degradation(**{**OFF, "task": "inpainting"})(x, seed=3)
    frac = out["params"]["mask_fraction"]
    assert torch.all(frac > 0.005) and torch.all(frac < 0.9)
    # painted pixels are white, the rest untouched
    torch.testing.assert_close((out["lq"] == 1).float().mean((1, 2, 3)), frac)


def test_seeded_runs_are_bit_identical_and_seeds_differ():
    x = torch.rand(4, 3, 64, 64)
    d = Degradation(blur_probs=(0.3, 0.3, 0.4), poisson_prob=0.5)
    a, b, c = d(x, seed=7), d(x, seed=7), d(x, seed=8)
    assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["hq"], b["hq"])
    assert not torch.equal(a["lq"], c["lq"])
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(d(x, generator=g1)["lq"], d(x, generator=g2)["lq"])


def test_samples_are_degraded_independently():
    x = torch.rand(3, 3, 64, 64)
    d = Degradation(noise=None, blur_probs=(0.3, 0.3, 0.4), gray_prob=0.5)
    out = d(x, seed=11)
    for i in range(3):
        single = {k: v[i : i + 1] for k, v in out["params"].items()}
        alone = d(x[i : i + 1], params=single, seed=0)["lq"]
        torch.testing.assert_close(alone, out["lq"][i : i + 1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.float32, torch.float64])
def test_range_and_dtype_preserved(dtype):
    x = torch.rand(2, 3, 48, 48)
    x = (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x.to(dtype)
    out = Degradation(poisson_prob=1.0, color_jitter_prob=1.0)(x, seed=0)
    for key in ("lq", "hq"):
        assert out[key].dtype == dtype and out[key].shape == x.shape
        hi = 255 if dtype == torch.uint8 else 1
        assert out[key].min() >= 0 and out[key].max() <= hi


def test_invalid_settings_are_explained():
    with pytest.raises(ValueError, match="null to switch the op off"):
        Degradation(sigma=(5.0, 1.0))
    with pytest.raises(ValueError, match="odd"):
        Degradation(kernel_size=40)
    with pytest.raises(ValueError, match="blur_probs"):
        Degradation(blur_probs=(0.8, 0.8, 0.0))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        Degradation()(torch.rand(3, 32, 32))


@pytest.mark.parametrize("preset", ["gfpgan", "paper", "codeformer", "colorization", "inpainting"])
def test_presets_instantiate_and_run(preset):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+degradation={preset}"])
    d = instantiate(cfg.degradation)
    assert isinstance(d, Degradation)
    out = d(torch.rand(2, 3, 64, 64), seed=0)
    assert out["lq"].shape == (2, 3, 64, 64)


def test_spatial_ranges_follow_the_face_size_and_512_is_unchanged():
    """At 64 px the blur sigma and motion length are the 512 px draws / 8 (same seed), the kernel
    41 -> 5; downsampling, noise and JPEG are the same draws; at 512 px nothing changes."""
    d = Degradation(blur_probs=(0.3, 0.3, 0.4))
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    at512, at64 = d.sample_params(16, g(), size=512), d.sample_params(16, g(), size=64)
    for key in ("sigma_x", "sigma_y", "motion_length"):
        torch.testing.assert_close(at64[key], at512[key] / 8)
    for key in ("scale", "noise_sigma", "jpeg_quality", "blur_kind", "theta", "gray"):
        assert torch.equal(at64[key], at512[key]), key
    assert (d.kernel_size_at(512), d.kernel_size_at(64), d.kernel_size_at(32)) == (41, 5, 3)
    x = torch.rand(2, 3, 512, 512)
    pixels = Degradation(blur_probs=(0.3, 0.3, 0.4), reference_size=None)
    assert torch.equal(d(x, seed=3)["lq"], pixels(x, seed=3)["lq"])  # 512: the old behaviour
    y = torch.rand(2, 3, 64, 64)
    assert not torch.equal(d(y, seed=3)["lq"], pixels(y, seed=3)["lq"])  # 64: milder
