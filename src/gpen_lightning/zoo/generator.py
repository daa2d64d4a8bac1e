"""The GAN prior: a StyleGAN2 generator with concatenated noise and a ``narrow`` channel factor."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from torch import nn

from gpen_lightning.zoo.layers import (
    ConstantInput,
    EqualLinear,
    NoiseMode,
    PixelNorm,
    StyledConv,
    ToRGB,
)

__all__ = ["Generator", "channel_table", "log2_size", "mixing_crossover"]


def mixing_crossover(n_latent: int, rng: random.Random | None = None) -> int:
    """The layer where style mixing switches to the second latent: uniform in [1, n_latent - 1],
    a host draw from ``rng`` (default: Python's global ``random``, which ``seed_everything``
    seeds)."""
    return (rng or random).randint(1, n_latent - 1)


def log2_size(size: int) -> int:
    """log2 of a power-of-two resolution >= 8, with a clear error otherwise."""
    log = round(math.log2(size)) if size > 0 else 0
    if size < 8 or 2**log != size:
        raise ValueError(f"size must be a power of two >= 8, got {size}")
    return log


def channel_table(channel_multiplier: int = 2, narrow: float = 1.0) -> dict[int, int]:
    """Channels per resolution: 4..32 -> 512, 64 -> 256*cm, ..., 2048 -> 8*cm, all x narrow.
    The one source of the widths (``official.infer_config`` reads cm back from them)."""
    cm = channel_multiplier
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm}
    base.update({512: 32 * cm, 1024: 16 * cm, 2048: 8 * cm})
    return {res: int(ch * narrow) for res, ch in base.items()}


class Generator(nn.Module):
    """StyleGAN2 generator (mapping + synthesis) as used by GPEN as its prior / decoder.

    Args:
        size: output resolution S (power of two).
        style_dim: latent width D of z and w.
        n_mlp: mapping-network depth.
        channel_multiplier: cm of the channel table.
        narrow: factor on every channel count.
        noise_mode: ``concat`` (GPEN), ``add`` (StyleGAN2) or ``none``.
        lr_mlp: learning-rate multiplier of the mapping network.
        w_avg_beta: decay of the tracked average w (updated by ``forward`` in training mode).

    Call: ``generator(z, noise=[...])`` with z (B, D) -> image (B, 3, S, S) (see ``forward``).
    """

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        *,
        channel_multiplier: int = 2,
        narrow: float = 1.0,
        noise_mode: NoiseMode = "concat",
        lr_mlp: float = 0.01,
        w_avg_beta: float = 0.995,
    ) -> None:
        super().__init__()
        self.size = size
        self.log_size = log2_size(size)
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.noise_mode = noise_mode
        self.w_avg_beta = w_avg_beta
        self.channels = channel_table(channel_multiplier, narrow)
        mult = 2 if noise_mode == "concat" else 1

        self.style = nn.Sequential(
            PixelNorm(),
            *[
                EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True)
                for _ in range(n_mlp)
            ],
        )
        ch4 = self.channels[4]
        self.input = ConstantInput(ch4)
        self.conv1 = StyledConv(ch4, ch4, 3, style_dim, noise_mode=noise_mode)
        self.to_rgb1 = ToRGB(ch4 * mult, style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = ch4
        for log_res in range(3, self.log_size + 1):
            out_ch = self.channels[2**log_res]
            kw = dict(noise_mode=noise_mode)
            self.convs.append(StyledConv(in_ch * mult, out_ch, 3, style_dim, upsample=True, **kw))
            self.convs.append(StyledConv(out_ch * mult, out_ch, 3, style_dim, **kw))
            self.to_rgbs.append(ToRGB(out_ch * mult, style_dim))
            in_ch = out_ch
        self.n_latent = 2 * self.log_size - 2
        self.register_buffer("w_avg", torch.zeros(style_dim))
        # Activations run channels-last: faster convs and depthwise blurs on CPU and GPU alike.
        self.memory_format = torch.channels_last

    @property
    def num_noise(self) -> int:
        """Number of styled convs, i.e. of noise maps: 2*log2(S) - 3."""
        return 2 * self.log_size - 3

    def noise_shapes(self, batch: int = 1) -> list[tuple[int, int, int, int]]:
        """Shape of each noise map in layer order (4x4 first): (B, C_out of that conv, r, r)."""
        shapes = [(batch, self.channels[4], 4, 4)]
        for log_res in range(3, self.log_size + 1):
            r = 2**log_res
            shapes += [(batch, self.channels[r], r, r)] * 2
        return shapes

    def make_noise(
        self, batch: int = 1, *, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """One standard-normal map per styled conv, shaped as ``noise_shapes(batch)``."""
        dev = self.input.input.device
        return [torch.randn(s, device=dev, generator=generator) for s in self.noise_shapes(batch)]

    def mapping(
        self, z: torch.Tensor, *, truncation: float = 1.0, track_w_avg: bool = False
    ) -> torch.Tensor:
        """z (B, D) -> w (B, D); optionally update ``w_avg`` and truncate towards it."""
        w = self.style(z)
        if track_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(
                    torch.lerp(w.detach().to(self.w_avg.dtype).mean(0), self.w_avg, self.w_avg_beta)
                )
        return self.truncate(w, truncation)

    def truncate(self, w: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        """Blend w (B, D) towards ``w_avg``: w_avg + psi * (w - w_avg); psi = 1 is a no-op."""
        if truncation == 1:
            return w
        w_avg = self.w_avg.to(w.dtype)
        return w_avg + truncation * (w - w_avg)

    @torch.no_grad()
    def mean_latent(
        self, n: int = 4096, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean w of ``n`` random z: (D,). Use ``w_avg.copy_(...)`` to set the truncation centre."""
        z = torch.randn(n, self.style_dim, device=self.w_avg.device, generator=generator)
        return self.style(z).mean(0)

    def broadcast(
        self, ws: Sequence[torch.Tensor], *, inject_index: int | None = None
    ) -> torch.Tensor:
        """One or two w (B, D) -> latents (B, n_latent, D); two mix at ``inject_index``."""
        if len(ws) == 1:
            return ws[0].unsqueeze(1).repeat(1, self.n_latent, 1)
        if len(ws) != 2:
            raise ValueError(f"expected 1 or 2 latents for style mixing, got {len(ws)}")
        if inject_index is None:
            inject_index = mixing_crossover(self.n_latent)
        first = ws[0].unsqueeze(1).repeat(1, inject_index, 1)
        second = ws[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)
        return torch.cat([first, second], 1)

    def latents(
        self,
        z: torch.Tensor | Sequence[torch.Tensor],
        *,
        input_is_w: bool = False,
        truncation: float = 1.0,
        inject_index: int | None = None,
    ) -> torch.Tensor:
        """One or two z (or w with ``input_is_w``) (B, D) -> per-layer latents (B, n_latent, D):
        mapping (tracking ``w_avg`` in training mode), truncation and style mixing."""
        zs = [z] if isinstance(z, torch.Tensor) else list(z)
        if input_is_w:
            ws = [self.truncate(w, truncation) for w in zs]
        else:
            ws = [self.mapping(s, truncation=truncation, track_w_avg=self.training) for s in zs]
        return self.broadcast(ws, inject_index=inject_index)

    def synthesis(
        self, latent: torch.Tensor, noise: Sequence[torch.Tensor | None] | None = None
    ) -> torch.Tensor:
        """Per-layer latents (B, n_latent, D) and noise maps (layer order) -> image (B, 3, S, S).

        Missing noise (``None`` or ``None`` entries) is drawn per layer with the right shape.
        """
        if noise is None:
            noise = [None] * self.num_noise
        if len(noise) != self.num_noise:
            raise ValueError(f"expected {self.num_noise} noise maps (4x4 first), got {len(noise)}")
        out = self.input(latent).contiguous(memory_format=self.memory_format)
        out = self.conv1(out, latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv_up, conv, n_up, n, to_rgb in zip(
            self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2], self.to_rgbs
        ):
            out = conv_up(out, latent[:, i], n_up)
            out = conv(out, latent[:, i + 1], n)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip

    def forward(
        self,
        z: torch.Tensor | Sequence[torch.Tensor],
        *,
        noise: Sequence[torch.Tensor | None] | None = None,
        input_is_w: bool = False,
        truncation: float = 1.0,
        inject_index: int | None = None,
        return_latents: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Generate images.

        Args:
            z: (B, D) latent, or two of them for style mixing; w instead of z if ``input_is_w``.
            noise: ``num_noise`` maps in layer order (4x4 first), shaped ``noise_shapes(B)``;
                ``None`` draws fresh noise.
            input_is_w: skip the mapping network.
            truncation: psi, blending each w towards ``w_avg``.
            inject_index: style-mixing crossover layer (random when None).
            return_latents: also return the per-layer latents (B, n_latent, D).

        Returns:
            image (B, 3, S, S), roughly in [-1, 1]; and the latents if asked.
        """
        latent = self.latents(
            z, input_is_w=input_is_w, truncation=truncation, inject_index=inject_index
        )
        image = self.synthesis(latent, noise)
        return (image, latent) if return_latents else image
