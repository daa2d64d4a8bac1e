"""Building blocks: shapes, equivalence of the two modulated-conv formulations, noise modes."""

from __future__ import annotations

import math

import pytest
import torch

from gpen_lightning.zoo import (
    ConvLayer,
    EqualConv2d,
    EqualLinear,
    ModulatedConv2d,
    NoiseInjection,
    PixelNorm,
    StyledConv,
    ToRGB,
    minibatch_stddev,
)


@pytest.mark.parametrize("mode", ["plain", "up", "down"])
def test_modulated_conv_fused_equals_dense(mode):
    conv = ModulatedConv2d(6, 5, 3, 16, upsample=mode == "up", downsample=mode == "down")
    x, style = torch.randn(3, 6, 8, 8), torch.randn(3, 16)
    conv.fused = True
    fused = conv(x, style)
    conv.fused = False
    dense = conv(x, style)
    expected = {"plain": 8, "up": 16, "down": 4}[mode]
    assert fused.shape == (3, 5, expected, expected)
    torch.testing.assert_close(fused, dense, atol=1e-5, rtol=1e-5)


def test_modulated_conv_demodulates_each_sample():
    # With demodulation every output channel's effective weight has unit L2 norm per sample, so
    # the response to a unit impulse at the centre has squared sum 1 over (in, k, k).
    conv = ModulatedConv2d(4, 3, 3, 8)
    style = torch.randn(2, 8)
    s = conv.modulation(style)
    w = conv.scale * conv.weight * s.view(2, 1, 4, 1, 1)
    w = w * torch.rsqrt(w.pow(2).sum([2, 3, 4], keepdim=True) + 1e-8)
    torch.testing.assert_close(w.pow(2).sum([2, 3, 4]), torch.ones(2, 3), atol=1e-5, rtol=0)
    # and the module uses exactly that weight: compare against a per-sample plain conv
    x = torch.randn(2, 4, 6, 6)
    out = conv(x, style)
    for i in range(2):
        ref = torch.nn.functional.conv2d(x[i : i + 1], w[i], padding=1)
        torch.testing.assert_close(out[i : i + 1], ref, atol=1e-5, rtol=1e-5)


def test_modulation_bias_starts_at_one_and_equalised_scales():
    conv = ModulatedConv2d(4, 3, 3, 8)
    assert torch.all(conv.modulation.bias == 1)
    assert math.isclose(conv.scale, 1 / math.sqrt(4 * 9))
    lin = EqualLinear(10, 5, lr_mul=0.01, activate=True)
    assert math.isclose(lin.scale, 0.01 / math.sqrt(10))
    assert lin.weight.std() > 10  # stored N(0,1)/lr_mul
    eq = EqualConv2d(4, 2, 3, padding=1)
    x = torch.randn(1, 4, 5, 5)
    ref = torch.nn.functional.conv2d(x, eq.weight / 6, eq.bias, padding=1)
    torch.testing.assert_close(eq(x), ref)


@pytest.mark.parametrize("mode,channels", [("concat", 8), ("add", 4), ("none", 4)])
def test_noise_injection_modes(mode, channels):
    inj = NoiseInjection(mode)
    x = torch.randn(2, 4, 5, 5)
    noise = torch.randn(2, 4, 5, 5)
    out = inj(x, noise)
    assert out.shape == (2, channels, 5, 5)
    assert (mode == "none") == (len(list(inj.parameters())) == 0)
    if mode != "none":
        with torch.no_grad():
            inj.weight.fill_(0.5)
        out = inj(x, noise)
        expected = torch.cat([x, 0.5 * noise], 1) if mode == "concat" else x + 0.5 * noise
        torch.testing.assert_close(out, expected)
        assert inj(x).shape == (2, channels, 5, 5)  # draws a correctly shaped map


def test_noise_mode_validated():
    with pytest.raises(ValueError, match="noise mode"):
        NoiseInjection("multiply")


def test_styled_conv_concatenates_the_weighted_noise_before_the_activation():
    """StyledConv = leaky ReLU(0.2) x sqrt(2) of [conv(x, s) ; w * noise] plus the bias; ToRGB adds
    its bias and the upsampled skip (a constant skip stays constant after the blur upsample)."""
    torch.manual_seed(0)
    sc = StyledConv(8, 4, 3, 16, upsample=True, noise_mode="concat")
    with torch.no_grad():
        sc.noise.weight.fill_(0.5)
        sc.activate.bias.normal_()
    x, s, noise = torch.randn(2, 8, 4, 4), torch.randn(2, 16), torch.randn(2, 4, 8, 8)
    out = sc(x, s, noise)
    assert out.shape == (2, 8, 8, 8)
    pre = torch.cat([sc.conv(x, s), 0.5 * noise], 1) + sc.activate.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(out, torch.nn.functional.leaky_relu(pre, 0.2) * math.sqrt(2))
    rgb = ToRGB(8, 16)
    with torch.no_grad():
        rgb.bias.fill_(0.25)
    img = rgb(out, s, torch.full((2, 3, 4, 4), 2.0))
    assert img.shape == (2, 3, 8, 8)
    interior = (img - rgb.conv(out, s))[:, :, 2:-2, 2:-2]
    torch.testing.assert_close(interior, torch.full_like(interior, 2.25), atol=1e-5, rtol=0)


def test_conv_layer_layout_matches_official_indices():
    down = ConvLayer(4, 8, 3, downsample=True)
    assert [n for n, _ in down.named_parameters()] == ["1.weight", "2.bias"]
    assert "0.kernel" in down.state_dict()
    assert down(torch.randn(1, 4, 8, 8)).shape == (1, 8, 4, 4)
    skip = ConvLayer(4, 8, 1, downsample=True, activate=False, bias=False)
    assert list(skip.state_dict()) == ["0.kernel", "1.weight"]
    assert skip(torch.randn(1, 4, 8, 8)).shape == (1, 8, 4, 4)
    with pytest.raises(ValueError, match="bias=True"):
        ConvLayer(4, 8, 3, bias=False)  # the activation carries the bias


def test_pixel_norm_unit_rms():
    out = PixelNorm()(torch.randn(4, 32) * 7)
    torch.testing.assert_close(out.pow(2).mean(1), torch.ones(4), atol=1e-5, rtol=0)


@pytest.mark.parametrize("group", [None, 2, 4])
def test_minibatch_stddev_groups(group):
    x = torch.randn(4, 6, 3, 3)
    out = minibatch_stddev(x, group)
    assert out.shape == (4, 7, 3, 3)
    g = 4 if group is None else group
    for n in range(4):
        members = x[[m for m in range(4) if m % (4 // g) == n % (4 // g)]]
        expected = members.var(0, unbiased=False).add(1e-8).sqrt().mean()
        torch.testing.assert_close(out[n, 6], torch.full((3, 3), expected.item()))


def test_minibatch_stddev_indivisible_batch():
    with pytest.raises(ValueError, match="divisible"):
        minibatch_stddev(torch.randn(3, 2, 2, 2), 2)


def test_drawn_noise_follows_the_layout_of_the_activations():
    from gpen_lightning.zoo.layers import _randn_as

    x = torch.zeros(4, 8, 16, 16)
    for layout in (torch.contiguous_format, torch.channels_last):
        y = x.contiguous(memory_format=layout)
        noise = _randn_as(y)
        assert noise.shape == y.shape and noise.is_contiguous(memory_format=layout)
        assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1) < 0.05
