"""FIR ops against a direct loop implementation of upfirdn2d's definition."""

from __future__ import annotations

import math

import pytest
import torch

from gpen_lightning.zoo.ops import bias_leaky_relu, make_kernel, upfirdn2d


def reference_upfirdn2d(x, kernel, up, down, pad):
    """Literal definition: zero-insert, pad (may be negative), true convolution, stride."""
    b, c, h, w = x.shape
    u = torch.zeros(b, c, h * up, w * up, dtype=torch.float64)
    u[:, :, ::up, ::up] = x.double()
    p0, p1 = pad
    n = h * up + p0 + p1
    padded = torch.zeros(b, c, n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            si, sj = i - p0, j - p0
            if 0 <= si < h * up and 0 <= sj < w * up:
                padded[:, :, i, j] = u[:, :, si, sj]
    kh, kw = kernel.shape
    k = kernel.double()
    out_n = n - kh + 1
    out = torch.zeros(b, c, out_n, out_n, dtype=torch.float64)
    for i in range(out_n):
        for j in range(out_n):
            # true convolution: sum_{a,b} padded[i + kh-1 - a, j + kw-1 - b] * k[a, b]
            patch = padded[:, :, i : i + kh, j : j + kw].flip(2, 3)
            out[:, :, i, j] = (patch * k).sum((2, 3))
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize(
    "up,down,pad",
    [(1, 1, (1, 1)), (2, 1, (2, 1)), (1, 2, (2, 2)), (1, 2, (1, 1)), (2, 1, (1, -1))],
)
def test_upfirdn2d_matches_definition(up, down, pad):
    x = torch.randn(2, 3, 7, 7)
    # asymmetric kernel so a missing flip would be caught
    kernel = torch.arange(1.0, 13.0).reshape(3, 4)[:3, :3] / 20
    out = upfirdn2d(x, kernel, up=up, down=down, pad=pad)
    ref = reference_upfirdn2d(x, kernel, up, down, pad)
    assert out.shape == ref.shape
    torch.testing.assert_close(out.double(), ref, atol=1e-6, rtol=1e-6)


def test_make_kernel_normalised_outer_product():
    k = make_kernel([1, 3, 3, 1])
    assert k.shape == (4, 4)
    assert math.isclose(k.sum().item(), 1.0, rel_tol=1e-6)
    torch.testing.assert_close(k[0], torch.tensor([1.0, 3, 3, 1]) / 64)


def test_blur_preserves_constant_and_upsample_doubles_size():
    kernel = make_kernel([1, 3, 3, 1])
    x = torch.full((1, 2, 8, 8), 0.7)
    blurred = upfirdn2d(x, kernel, pad=(1, 2))
    # interior (no zero padding reaches it) keeps the constant: the kernel sums to 1
    torch.testing.assert_close(
        blurred[:, :, 2:-2, 2:-2], torch.full_like(blurred[:, :, 2:-2, 2:-2], 0.7)
    )
    up = upfirdn2d(x, kernel * 4, up=2, pad=(2, 1))
    assert up.shape == (1, 2, 16, 16)
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], torch.full_like(up[:, :, 2:-2, 2:-2], 0.7))


def test_bias_leaky_relu():
    x = torch.tensor([[-1.0, 2.0]])
    out = bias_leaky_relu(x, torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(out, torch.tensor([[-0.1, 1.0]]) * math.sqrt(2))
    y = bias_leaky_relu(torch.zeros(1, 2, 3, 3), torch.tensor([1.0, -1.0]))
    assert torch.allclose(y[0, 0], torch.full((3, 3), math.sqrt(2)))
    assert torch.allclose(y[0, 1], torch.full((3, 3), -0.2 * math.sqrt(2)))


def test_upfirdn2d_keeps_a_channels_last_input_channels_last():
    """The general path (upsampling, uneven pads) reshapes through contiguous memory; the result
    gets the input's layout back, with the same values, so layers after it (and their gradients)
    do not mix layouts."""
    x = torch.randn(2, 3, 8, 8)
    k = make_kernel([1, 3, 3, 1]) * 4
    ref = upfirdn2d(x, k, up=2, pad=(2, 1))
    out = upfirdn2d(x.contiguous(memory_format=torch.channels_last), k, up=2, pad=(2, 1))
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    assert upfirdn2d(x, k, up=2, pad=(2, 1)).is_contiguous()
