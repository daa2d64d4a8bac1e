"""GPEN: a U-shaped network whose decoder is the GAN prior."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gpen_lightning.zoo.blocks import ConvLayer
from gpen_lightning.zoo.generator import Generator, log2_size
from gpen_lightning.zoo.layers import EqualLinear

__all__ = ["GPEN"]


class GPEN(nn.Module):
    """Encoder -> latent (through the prior's mapping network) + encoder features as noise -> prior.

    Args:
        size: model resolution S; inputs must be (B, 3, S, S) in [-1, 1].
        style_dim, n_mlp, **prior: the prior's ``Generator`` arguments (``channel_multiplier``,
            ``narrow``, ``noise_mode``, ``lr_mlp``).

    The encoder is ``ecd0`` (1x1 conv at S) then ``ecd1 .. ecd{log2(S)-2}``, each halving the
    resolution down to 4x4. ``final_linear`` maps the flattened 4x4 feature to z, which goes
    through the prior's mapping network; the single w drives every layer. With ``concat`` or
    ``add`` noise, the encoder feature at resolution r is the noise of both styled convs at r.
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, **prior: Any) -> None:
        super().__init__()
        self.size = size
        self.log_size = log2_size(size)
        self.generator = Generator(size, style_dim, n_mlp, **prior)
        channels = self.generator.channels
        self.ecd0 = nn.Sequential(ConvLayer(3, channels[size], 1))
        in_ch = channels[size]
        for i, log_res in enumerate(range(self.log_size, 2, -1), start=1):
            out_ch = channels[2 ** (log_res - 1)]
            layer = ConvLayer(in_ch, out_ch, 3, downsample=True)
            setattr(self, f"ecd{i}", nn.Sequential(layer))
            in_ch = out_ch
        self.final_linear = nn.Sequential(
            EqualLinear(channels[4] * 4 * 4, style_dim, activate=True)
        )

    @property
    def encoder(self) -> list[nn.Module]:
        """The encoder stages ``ecd0 .. ecd{log2(S)-2}``, full resolution first."""
        return [getattr(self, f"ecd{i}") for i in range(self.log_size - 1)]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, 3, S, S) -> z (B, D) and the features [S, S/2, ..., 4] (full resolution first)."""
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (self.size, self.size):
            raise ValueError(
                f"GPEN-{self.size} expects RGB input of shape (B, 3, {self.size}, {self.size}) "
                f"in [-1, 1], got {tuple(x.shape)}; resize or align the face to {self.size}px first"
            )
        feats = []
        x = x.contiguous(memory_format=self.generator.memory_format)
        for stage in self.encoder:
            x = stage(x)
            feats.append(x)
        z = self.final_linear(x.reshape(x.shape[0], -1))
        return z, feats

    def route_noise(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
        """Encoder features (full resolution first) -> prior noise list (4x4 first).

        Each feature is used twice, deepest first, and the first entry is dropped.
        """
        if self.generator.noise_mode == "none":
            return [None] * self.generator.num_noise
        doubled = [f for f in reversed(feats) for _ in range(2)]
        return doubled[1:]

    def forward(
        self, x: torch.Tensor, *, truncation: float = 1.0, return_latents: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Restore faces: (B, 3, S, S) in [-1, 1] -> (B, 3, S, S); with the latents if asked."""
        z, feats = self.encode(x)
        w = self.generator.mapping(z, truncation=truncation)
        latent = self.generator.broadcast([w])
        image = self.generator.synthesis(latent, self.route_noise(feats))
        return (image, latent) if return_latents else image
