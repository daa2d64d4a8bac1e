"""Low-level tensor ops in plain PyTorch: FIR filtering with upfirdn2d semantics, bias + leaky ReLU.

These replace the CUDA extensions of the official code (``upfirdn2d``, ``fused_leaky_relu``) with
pure PyTorch that runs on any device and dtype and is differentiable to any order (R1 and
path-length regularisation need double backward).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["bias_leaky_relu", "fp32", "is_channels_last", "make_kernel", "upfirdn2d"]

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in at least single precision: half and bfloat16 (and integer) tensors as float32,
    float64 unchanged (a ``64-true`` run keeps its precision through the fp32 islands of mixed
    precision: demodulation, the losses, the penalties' inner gradients)."""
    return x if x.dtype == torch.float64 else x.float()


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` (B, C, H, W) is laid out channels-last, and not also plain contiguous (as a
    tensor with one channel or 1x1 maps is in both formats)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def make_kernel(taps: Sequence[float]) -> torch.Tensor:
    """Normalised 2-D FIR kernel from 1-D taps (outer product) or a 2-D list.

    ``[1, 3, 3, 1]`` -> (4, 4) kernel summing to 1.
    """
    k = torch.as_tensor(taps, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(
    x: torch.Tensor,
    kernel: torch.Tensor,
    *,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter and downsample, per channel.

    Same semantics as the official ``upfirdn2d`` (x and y use the same factors and pads):
    ``out = downsample(conv(pad(upsample(x)), flip(kernel)))``.

    Args:
        x: input (B, C, H, W).
        kernel: FIR kernel (kh, kw), already scaled (e.g. x4 for 2x upsampling).
        up: integer upsampling factor (zeros inserted between samples).
        down: integer downsampling factor (stride of the filtering).
        pad: (before, after) padding applied to both axes after upsampling; may be negative.

    Returns:
        (B, C, (H*up + pad0 + pad1 - kh) // down + 1, ...) tensor.
    """
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    # Depthwise true convolution: cross-correlation with the flipped kernel.
    weight = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].expand(c, 1, kh, kw)
    p0, p1 = pad
    if up == 1 and p0 == p1 >= 0:
        # Fast path (every blur of the networks): padding inside the conv keeps the memory format.
        return F.conv2d(x, weight, stride=down, padding=p0, groups=c)
    # the general path reshapes through contiguous memory: give a channels-last input its layout
    # back, or everything downstream (and its gradients) mixes layouts
    last = is_channels_last(x)
    if up > 1:
        # (B, C, H, 1, W, 1) -> pad the singleton axes with up-1 zeros -> (B, C, H*up, W*up)
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        hh, ww = x.shape[2:]
        x = x[:, :, max(-p0, 0) : hh - max(-p1, 0), max(-p0, 0) : ww - max(-p1, 0)]
    out = F.conv2d(x, weight, stride=down, groups=c)
    return out.contiguous(memory_format=torch.channels_last) if last else out


def bias_leaky_relu(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    negative_slope: float = LRELU_SLOPE,
    gain: float = LRELU_GAIN,
    inplace: bool = False,
) -> torch.Tensor:
    """``leaky_relu(x + bias) * gain`` with the bias broadcast over dim 1.

    Args:
        x: (B, C) or (B, C, H, W).
        bias: (C,) or None.
        inplace: overwrite ``x`` (no new allocation: on CPU a fresh large tensor costs more than
            the arithmetic). Only for intermediates nobody else holds, outside autograd.
    """
    shape = [1, -1] + [1] * (x.ndim - 2)
    if inplace:
        if bias is not None:
            x.add_(bias.to(x.dtype).view(shape))
        return F.leaky_relu_(x, negative_slope).mul_(gain)
    if bias is not None:
        x = x + bias.to(x.dtype).view(shape)
    return F.leaky_relu(x, negative_slope) * gain
