"""StyleGAN2 residual discriminator, as shipped with the GPEN checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from gpen_lightning.zoo.blocks import ConvLayer, ResBlock
from gpen_lightning.zoo.generator import channel_table, log2_size
from gpen_lightning.zoo.layers import EqualLinear
from gpen_lightning.zoo.ops import fp32

__all__ = ["Discriminator", "minibatch_stddev"]


def minibatch_stddev(
    x: torch.Tensor, group_size: int | None = None, num_features: int = 1
) -> torch.Tensor:
    """Append the minibatch standard deviation: (B, C, H, W) -> (B, C + num_features, H, W).

    Samples ``n`` and ``n + B/G`` ... share a group (G = ``group_size``; ``None`` = the whole batch,
    as the official GPEN code). B must be divisible by the group size.
    """
    b, c, h, w = x.shape
    g = b if group_size is None else min(group_size, b)
    if b % g:
        raise ValueError(f"batch size {b} is not divisible by the minibatch-stddev group size {g}")
    f = num_features
    y = x.view(g, -1, f, c // f, h, w)  # (G, B/G, F, C/F, H, W)
    y = torch.sqrt(fp32(y).var(0, unbiased=False) + 1e-8)  # (B/G, F, C/F, H, W)
    y = y.mean([2, 3, 4]).to(x.dtype)  # (B/G, F)
    y = y.view(-1, f, 1, 1).repeat(g, 1, h, w)  # (B, F, H, W)
    return torch.cat([x, y], 1)


class Discriminator(nn.Module):
    """Residual D: (B, 3, S, S) -> logits (B, 1).

    Args:
        size: input resolution S.
        channel_multiplier, narrow: channel table as the generator's.
        stddev_group: minibatch-stddev group size (None = whole batch, the official behaviour).
    """

    def __init__(
        self,
        size: int,
        *,
        channel_multiplier: int = 2,
        narrow: float = 1.0,
        stddev_group: int | None = None,
    ) -> None:
        super().__init__()
        self.size = size
        log_size = log2_size(size)
        channels = channel_table(channel_multiplier, narrow)
        blocks: list[nn.Module] = [ConvLayer(3, channels[size], 1)]
        in_ch = channels[size]
        for log_res in range(log_size, 2, -1):
            out_ch = channels[2 ** (log_res - 1)]
            blocks.append(ResBlock(in_ch, out_ch))
            in_ch = out_ch
        self.convs = nn.Sequential(*blocks)
        self.stddev_group = stddev_group
        self.stddev_feat = 1
        self.final_conv = ConvLayer(in_ch + 1, channels[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(channels[4] * 4 * 4, channels[4], activate=True),
            EqualLinear(channels[4], 1),
        )
        # None: activations keep the input's layout; torch.channels_last converts the input
        self.memory_format: torch.memory_format | None = None

    def forward(
        self, x: torch.Tensor, *, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Score images; with ``return_features`` also return the intermediate features.

        Features: the output of every block of ``convs`` (S, S/2, ..., 4) and of ``final_conv``,
        T = log2(S) layers in all, the layers the fine-tuning feature-matching loss compares.
        """
        feats = []
        out = x if self.memory_format is None else x.contiguous(memory_format=self.memory_format)
        for block in self.convs:
            out = block(out)
            feats.append(out)
        out = minibatch_stddev(out, self.stddev_group, self.stddev_feat)
        out = self.final_conv(out)
        feats.append(out)
        logits = self.final_linear(out.reshape(out.shape[0], -1))
        return (logits, feats) if return_features else logits
