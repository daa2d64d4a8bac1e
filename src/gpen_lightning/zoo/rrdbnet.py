"""RRDBNet (ESRGAN's generator, as Real-ESRGAN / RealESRNet release it) for background
super-resolution: residual-in-residual dense blocks at the input resolution, then two nearest x2
upsamplings. The x2 and x1 models first fold 2x2 / 4x4 pixel blocks into channels
(pixel-unshuffle), so every scale ends with the same x4 upsampling tail.

Parameter names equal the released files' (``conv_first``, ``body.{i}.rdb{1,2,3}.conv{1..5}``,
``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``), so they load with
``strict=True``; ``rrdbnet_config`` reads the architecture off a state dict."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RRDBNet", "rrdbnet_config", "rrdbnet_from_state_dict"]

_UNSHUFFLE = {4: 1, 2: 2, 1: 4}  # output scale -> pixel-unshuffle factor of the input


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


class DenseBlock(nn.Module):
    """Five 3x3 convolutions, each seeing the block input and every earlier output; the last
    maps back to ``feat`` channels and is added to the input scaled by 0.2.

    Args:
        feat: channels in and out.
        grow: channels each of the first four convolutions adds.
    """

    def __init__(self, *, feat: int, grow: int) -> None:
        super().__init__()
        for i in range(4):
            setattr(self, f"conv{i + 1}", _conv(feat + i * grow, grow))
        self.conv5 = _conv(feat + 4 * grow, feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, feat, H, W) -> same
        seen = [x]
        for i in range(4):
            conv = getattr(self, f"conv{i + 1}")
            seen.append(F.leaky_relu(conv(torch.cat(seen, 1)), 0.2))
        return x + 0.2 * self.conv5(torch.cat(seen, 1))


class RRDB(nn.Module):
    """Three dense blocks in sequence around a residual scaled by 0.2."""

    def __init__(self, *, feat: int, grow: int) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (DenseBlock(feat=feat, grow=grow) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, feat, H, W) -> same
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """(B, in_ch, H, W) in [0, 1] -> (B, out_ch, scale*H, scale*W); H and W divisible by the
    unshuffle factor (2 for x2, 4 for x1).

    Args:
        scale: 4, 2 or 1.
        num_feat: trunk channels (64 in Real-ESRGAN's x4plus, 32 in GPEN's realesrnet files).
        num_block: RRDB blocks in the trunk (23 in the releases).
        num_grow_ch: growth channels of the dense blocks (32).
        in_ch: image channels in; out_ch: out.
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        in_ch: int = 3,
        out_ch: int = 3,
    ) -> None:
        super().__init__()
        if scale not in _UNSHUFFLE:
            raise ValueError(f"RRDBNet scale={scale}: choose 1, 2 or 4")
        self.scale, self.unshuffle = scale, _UNSHUFFLE[scale]
        self.conv_first = _conv(in_ch * self.unshuffle**2, num_feat)
        self.body = nn.Sequential(
            *(RRDB(feat=num_feat, grow=num_grow_ch) for _ in range(num_block))
        )
        self.conv_body = _conv(num_feat, num_feat)
        self.conv_up1 = _conv(num_feat, num_feat)
        self.conv_up2 = _conv(num_feat, num_feat)
        self.conv_hr = _conv(num_feat, num_feat)
        self.conv_last = _conv(num_feat, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)  # (B, C*u*u, H/u, W/u)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):  # two nearest x2 steps: x4 of the trunk
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def rrdbnet_config(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """The ``RRDBNet`` keyword arguments of a state dict (raises ``ValueError`` when it is not
    an RRDBNet's, e.g. Real-ESRGAN's compact SRVGGNet ``realesr-general-x4v3``)."""
    needed = ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_last.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        raise ValueError(
            f"not an RRDBNet state dict (missing {', '.join(missing)}): give a RealESRNet / "
            "Real-ESRGAN x2 or x4 RRDB file (e.g. realesrnet_x2.pth, RealESRGAN_x4plus.pth)"
        )
    feat, cin = state["conv_first.weight"].shape[:2]
    out_ch = state["conv_last.weight"].shape[0]
    in_ch = out_ch  # the releases map RGB to RGB; the unshuffle factor follows
    factor = round((cin // in_ch) ** 0.5)
    scale = {u: s for s, u in _UNSHUFFLE.items()}.get(factor)
    if scale is None or factor**2 * in_ch != cin:
        raise ValueError(f"conv_first takes {cin} channels: not 3, 12 or 48 (x4, x2, x1)")
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("body.")}
    return dict(
        scale=scale,
        num_feat=int(feat),
        num_block=len(blocks),
        num_grow_ch=int(state["body.0.rdb1.conv1.weight"].shape[0]),
        in_ch=int(in_ch),
        out_ch=int(out_ch),
    )


def rrdbnet_from_state_dict(state: Mapping[str, torch.Tensor]) -> RRDBNet:
    """An eval-mode ``RRDBNet`` holding ``state`` (a plain state dict or a released file's dict
    with ``params_ema`` / ``params``; ``params_ema`` preferred, as the releases are used)."""
    for key in ("params_ema", "params"):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    net = RRDBNet(**rrdbnet_config(state))
    net.load_state_dict(state, strict=True)
    return net.eval()
