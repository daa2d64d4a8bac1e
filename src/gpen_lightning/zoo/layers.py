"""Layers of the GPEN prior, encoder and discriminator (StyleGAN2 with concatenated noise).

Module and parameter names follow the official GPEN / rosinality layout, so our state dicts are
the official checkpoints' (see ``official.py``). Every layer uses the equalised learning rate:
weights are stored N(0, 1) / lr_mul and scaled at run time.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from gpen_lightning.zoo.ops import bias_leaky_relu, fp32, is_channels_last, make_kernel, upfirdn2d

NoiseMode = Literal["concat", "add", "none"]
NOISE_MODES: tuple[str, ...] = ("concat", "add", "none")
BLUR_TAPS: tuple[int, ...] = (1, 3, 3, 1)


class PixelNorm(nn.Module):
    """Normalise each vector to unit RMS over dim 1: (B, D) -> (B, D)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


def _no_autocast(device: torch.device) -> AbstractContextManager:
    """A block in which ``device``'s autocast (if it has one) is off."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias, then leaky ReLU(0.2) x sqrt(2): (B, C, ...) -> same shape.

    ``inplace``: overwrite the input when no gradient is recorded (set by the layers below, whose
    input is always a fresh intermediate).
    """

    def __init__(self, channels: int, *, inplace: bool = False) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_leaky_relu(x, self.bias, inplace=self.inplace and not torch.is_grad_enabled())


class EqualLinear(nn.Module):
    """Equalised-lr linear layer: (B, in) -> (B, out), optionally fused with bias + leaky ReLU.

    Args:
        in_dim: input features.
        out_dim: output features.
        bias: learn a bias.
        bias_init: initial bias value (1 for style modulations).
        lr_mul: learning-rate multiplier (0.01 in the mapping network).
        activate: apply leaky ReLU(0.2) x sqrt(2) after adding the bias.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activate: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        if self.activate:
            return bias_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self) -> str:
        out_dim, in_dim = self.weight.shape
        return f"{in_dim}, {out_dim}, lr_mul={self.lr_mul}, activate={self.activate}"


class EqualConv2d(nn.Module):
    """Equalised-lr conv: (B, in, H, W) -> (B, out, H', W')."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, {k}, stride={self.stride}, padding={self.padding}"


class Blur(nn.Module):
    """[1,3,3,1] low-pass filter, same channels: (B, C, H, W) -> (B, C, H + p0 + p1 - 3, ...)."""

    def __init__(self, *, pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        self.register_buffer("kernel", make_kernel(BLUR_TAPS) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling (zero insertion + filter, pad (2, 1)): (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, *, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(BLUR_TAPS) * factor**2)
        p = len(BLUR_TAPS) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ConstantInput(nn.Module):
    """Learned constant (1, C, 4, 4) repeated over the batch of ``ref`` (B, ...) -> (B, C, 4, 4)."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, ref: torch.Tensor) -> torch.Tensor:
        return self.input.repeat(ref.shape[0], 1, 1, 1)


def _randn_as(x: torch.Tensor) -> torch.Tensor:
    """Standard-normal noise shaped and laid out like ``x`` (B, C, H, W), drawn into contiguous
    memory: PyTorch's CPU sampler is about 10x slower writing a channels-last tensor."""
    if not is_channels_last(x):
        return torch.randn(x.shape, dtype=x.dtype, device=x.device)
    b, c, h, w = x.shape
    return torch.randn(b, h, w, c, dtype=x.dtype, device=x.device).permute(0, 3, 1, 2)


class NoiseInjection(nn.Module):
    """Inject a noise / feature map, scaled by a learned scalar initialised to 0.

    ``concat``: (B, C, H, W) -> (B, 2C, H, W) = cat([x, w * noise]) (GPEN);
    ``add``: x + w * noise (StyleGAN2); ``none``: x unchanged (no parameter).
    Without ``noise``, a (B, C, H, W) standard-normal map is drawn.
    """

    def __init__(self, mode: NoiseMode = "concat") -> None:
        super().__init__()
        if mode not in NOISE_MODES:
            raise ValueError(f"noise mode must be one of {NOISE_MODES}, got {mode!r}")
        self.mode = mode
        if mode != "none":
            self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "none":
            return x
        if noise is None:
            noise = _randn_as(x)
        # in the activations' dtype: under bf16 autocast the fp32 scale would promote the
        # product (and, for concat, the whole output) to fp32
        weight = self.weight.to(x.dtype)
        if self.mode == "add":
            return x + weight * noise.to(x.dtype)
        fmt = torch.channels_last if is_channels_last(x) else torch.contiguous_format
        if not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            # eager: one allocation and one pass, in the memory format of x (compiled code fuses
            # the cat below itself; an out= slice would break the graph)
            b, c, h, w = x.shape
            # allocated in that format (not converted after: a copy of the whole output)
            out = torch.empty((b, 2 * c, h, w), dtype=x.dtype, device=x.device, memory_format=fmt)
            out[:, :c].copy_(x)
            torch.mul(noise, weight, out=out[:, c:])
            return out
        noise = noise.to(dtype=x.dtype, memory_format=fmt)  # given maps: in the layout of x
        return torch.cat([x, weight * noise], dim=1)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class ModulatedConv2d(nn.Module):
    """Style-modulated conv: (B, in, H, W), style (B, style_dim) -> (B, out, H', W').

    ``upsample``: transposed conv stride 2, then [1,3,3,1] blur (H' = 2H).
    ``downsample``: blur, then conv stride 2 (H' = H/2).

    Two equivalent formulations: ``fused`` folds the styles into per-sample weights and runs one
    grouped conv (as the official code; best at batch 1); otherwise the input is scaled by the
    style, convolved with the shared weight and the output scaled by the demodulation
    coefficients (one dense conv over the batch; best at batch > 1). ``fused=None`` picks by
    batch size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        *,
        demodulate: bool = True,
        upsample: bool = False,
        downsample: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.downsample = downsample
        self.fused: bool | None = None
        factor = 2
        if upsample:
            p = (len(BLUR_TAPS) - factor) - (kernel_size - 1)
            self.blur = Blur(pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        if downsample:
            p = (len(BLUR_TAPS) - factor) + (kernel_size - 1)
            self.blur = Blur(pad=((p + 1) // 2, p // 2))
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(
            torch.randn(1, out_channels, in_channels, kernel_size, kernel_size)
        )
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = self.modulation(style)  # (B, in)
        fused = (x.shape[0] == 1) if self.fused is None else self.fused
        return self._forward_fused(x, s) if fused else self._forward_dense(x, s)

    def _demodulation(self, s: torch.Tensor) -> torch.Tensor:
        """Styles (B, in) -> 1 / ||scale * w * s|| per output channel (B, out), in float32.

        sum_{i,k} (scale w[o,i,k] s[b,i])^2 = scale^2 (s^2 @ (sum_k w^2)^T): no (B, out, in, k, k)
        temporary is needed.
        """
        with _no_autocast(s.device):  # autocast would round the sum to bf16
            wsq = torch.linalg.vector_norm(fp32(self.weight[0]), dim=(2, 3)).square()
            return torch.rsqrt(self.scale**2 * (fp32(s).square() @ wsq.t()) + 1e-8)

    def _forward_fused(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        b, cin, h, w = x.shape
        cout, k = self.out_channels, self.kernel_size
        coef = self.scale * fp32(s).view(b, 1, cin)  # (B, 1, in)
        if self.demodulate:
            coef = coef * self._demodulation(s).view(b, cout, 1)  # (B, out, in)
        # a single pass over the weight: (1, out, in, k, k) * (B, out|1, in, 1, 1)
        weight = (self.weight * coef[..., None, None]).to(x.dtype)
        if b > 1:  # (a same-shape reshape or view would drop channels-last strides at b == 1)
            x = x.reshape(1, b * cin, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(b * cin, cout, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=b)
        elif self.downsample:
            weight = weight.reshape(b * cout, cin, k, k)
            out = F.conv2d(self.blur(x), weight, padding=0, stride=2, groups=b)
        else:
            weight = weight.reshape(b * cout, cin, k, k)
            out = F.conv2d(x, weight, padding=self.padding, groups=b)
        if b > 1:
            out = out.reshape(b, cout, *out.shape[2:])
        return self.blur(out) if self.upsample else out

    def _forward_dense(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = x * s.to(x.dtype).view(b, -1, 1, 1)
        w = (self.scale * self.weight[0]).to(x.dtype)  # (out, in, k, k)
        if self.upsample:
            out = F.conv_transpose2d(x, w.transpose(0, 1), padding=0, stride=2)
        elif self.downsample:
            out = F.conv2d(self.blur(x), w, padding=0, stride=2)
        else:
            out = F.conv2d(x, w, padding=self.padding)
        if self.demodulate:
            out = out * self._demodulation(s).to(out.dtype).view(b, -1, 1, 1)
        return self.blur(out) if self.upsample else out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, {self.kernel_size}, "
            f"upsample={self.upsample}, downsample={self.downsample}, demodulate={self.demodulate}"
        )


class StyledConv(nn.Module):
    """Modulated conv + noise injection + bias/leaky ReLU.

    (B, in, H, W) -> (B, out * m, H', W') with m = 2 for ``concat`` noise, else 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        *,
        upsample: bool = False,
        noise_mode: NoiseMode = "concat",
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channels, out_channels, kernel_size, style_dim, upsample=upsample
        )
        self.noise = NoiseInjection(noise_mode)
        self.activate = FusedLeakyReLU(
            out_channels * (2 if noise_mode == "concat" else 1), inplace=True
        )

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation) + bias + upsampled skip.

    (B, in, H, W), style, skip (B, 3, H/2, W/2) or None -> (B, 3, H, W).
    """

    def __init__(self, in_channels: int, style_dim: int, *, upsample: bool = True) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out
