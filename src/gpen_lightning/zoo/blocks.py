"""Downsampling blocks of the GPEN encoder and the discriminator: ``ConvLayer`` and ``ResBlock``.

Names follow the official GPEN / rosinality layout (``ConvLayer`` is an ``nn.Sequential`` whose
indices are the official keys).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gpen_lightning.zoo.layers import BLUR_TAPS, Blur, EqualConv2d, FusedLeakyReLU

__all__ = ["ConvLayer", "ResBlock"]


class ConvLayer(nn.Sequential):
    """[Blur] + equalised conv + [bias/leaky ReLU]: (B, in, H, W) -> (B, out, H or H/2, ...).

    With ``downsample`` the conv has stride 2 after a [1,3,3,1] blur (the encoder and D blocks).
    With ``activate`` the bias lives in the fused activation; ``bias=False`` is for linear layers
    (the residual skip).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        downsample: bool = False,
        bias: bool = True,
        activate: bool = True,
    ) -> None:
        if activate and not bias:
            raise ValueError("ConvLayer(activate=True) keeps its bias in the activation: bias=True")
        layers: list[nn.Module] = []
        if downsample:
            p = (len(BLUR_TAPS) - 2) + (kernel_size - 1)
            layers.append(Blur(pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(
            EqualConv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                bias=bias and not activate,
            )
        )
        if activate:
            layers.append(FusedLeakyReLU(out_channels, inplace=True))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Residual D block: (B, in, H, W) -> (B, out, H/2, W/2).

    ``(conv2(conv1(x)) + skip(x)) / sqrt(2)``; conv2 and the 1x1 skip downsample (blur + stride 2).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True)
        self.skip = ConvLayer(
            in_channels, out_channels, 1, downsample=True, activate=False, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)
