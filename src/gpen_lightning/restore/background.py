"""Background upscaling of whole photos at ``upscale`` > 1: bicubic, or an RRDBNet
super-resolution network (RealESRNet / Real-ESRGAN x2 and x4 files), as the official GPEN demo
does with ``--use_sr``. The network runs in tiles with overlapping context (``tile``,
``tile_pad``) so that a 4K photo fits in memory; with ``tile_pad`` at least the network's
receptive radius (``RRDBUpsampler.radius``) the tiles equal one whole-image pass."""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gpen_lightning.io import require_weights
from gpen_lightning.restore.align import resize
from gpen_lightning.zoo.rrdbnet import RRDBNet, rrdbnet_from_state_dict

__all__ = ["BG_UPSAMPLERS", "RRDBUpsampler", "make_bg_upsampler", "resize_background"]

BG_UPSAMPLERS = ("bicubic", "realesrgan")
Upsampler = Callable[[torch.Tensor, float], torch.Tensor]
resize_background = resize  # (3, H, W) float -> (3, *size), bicubic and antialiased


def _tiles(length: int, tile: int) -> list[tuple[int, int]]:
    """[start, end) spans covering ``length`` in steps of ``tile`` (one span when tile <= 0)."""
    if tile <= 0 or tile >= length:
        return [(0, length)]
    return [(s, min(s + tile, length)) for s in range(0, length, tile)]


class RRDBUpsampler:
    """An RRDBNet applied to whole photos: (3, H, W) float in [0, 1] -> (3, sH, sW).

    The image is reflect-padded at its bottom/right to a multiple of the network's
    pixel-unshuffle factor, cut into ``tile`` x ``tile`` tiles each read with ``tile_pad``
    pixels of context on every side (clipped at the image border), and each tile's output core
    is written in place; at another ``scale`` than the network's, its output is then resized
    bicubically (e.g. ``upscale=3`` with an x4 file).

    Args:
        net: the network, or a path to a released file (``realesrnet_x2.pth``,
            ``RealESRGAN_x4plus.pth``, ...; ``params_ema`` preferred) whose architecture is read
            off its state dict.
        tile: tile side in input pixels (0: the whole image at once). Rounded down to a multiple
            of the unshuffle factor.
        tile_pad: context read around each tile (rounded up to that multiple).
        device: where the network runs.
    """

    def __init__(
        self,
        net: RRDBNet | str | os.PathLike,
        *,
        tile: int = 400,
        tile_pad: int = 10,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(net, RRDBNet):
            net = load_rrdbnet(net)
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        u = net.unshuffle
        self.tile = (max(tile, 0) // u) * u
        if 0 < tile < u:
            raise ValueError(f"bg_tile={tile} is smaller than the network's {u}-px pixel blocks")
        self.tile_pad = math.ceil(max(tile_pad, 0) / u) * u

    @property
    def scale(self) -> int:
        return self.net.scale

    @property
    def radius(self) -> int:
        """Input pixels beyond which an output pixel cannot see: 3x3 convolutions on the trunk
        (the first, 15 per block, the body's) plus the upsampling tail (under two trunk pixels
        with the nearest-neighbour steps), times the unshuffle factor."""
        blocks = len(self.net.body)
        return self.net.unshuffle * (15 * blocks + 2 + 2)

    @torch.no_grad()
    def run(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) float in [0, 1] -> (3, scale*H, scale*W), the network's own scale, clamped."""
        h, w = image.shape[-2:]
        u = self.net.unshuffle
        x = image[None].to(self.device, torch.float32)
        ph, pw = (-h) % u, (-w) % u
        if ph or pw:  # reflect needs the pad below the side: tiny images go replicate
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        out = self._tiled(x)
        return out[0, :, : h * self.scale, : w * self.scale].clamp(0, 1)

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W), H and W multiples of the unshuffle factor -> (1, 3, sH, sW)."""
        _, c, h, w = x.shape
        s, p = self.scale, self.tile_pad
        spans = [(ys, xs) for ys in _tiles(h, self.tile) for xs in _tiles(w, self.tile)]
        if len(spans) == 1:
            return self.net(x).float()
        out = x.new_zeros(1, c, h * s, w * s)
        for (y0, y1), (x0, x1) in tqdm(spans, desc="background tiles", leave=False):
            cy0, cx0 = max(y0 - p, 0), max(x0 - p, 0)
            tile = x[:, :, cy0 : min(y1 + p, h), cx0 : min(x1 + p, w)]
            up = self.net(tile).float()  # (1, 3, s*(tile + context), ...)
            oy, ox = (y0 - cy0) * s, (x0 - cx0) * s
            out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = up[
                :, :, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s
            ]
        return out

    def __call__(self, image: torch.Tensor, scale: float) -> torch.Tensor:
        """(3, H, W) float in [0, 1] -> (3, round(scale*H), round(scale*W)), as ``Paste``
        calls a background upsampler."""
        h, w = image.shape[-2:]
        size = (round(h * scale), round(w * scale))
        out = self.run(image).to(image.device)
        return resize(out, size).clamp(0, 1)


def load_rrdbnet(path: str | os.PathLike) -> RRDBNet:
    """The RRDBNet of a released ``.pth`` file (a clear error when it is missing or not one)."""
    how = "give a RealESRNet / Real-ESRGAN RRDB file (realesrnet_x2.pth, RealESRGAN_x4plus.pth)"
    path = require_weights(path, what="bg_weights", how=how)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        return rrdbnet_from_state_dict(state)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"bg_weights={path}: {err}") from err


def make_bg_upsampler(
    kind: str | Upsampler | None,
    *,
    weights: str | os.PathLike | None = None,
    tile: int = 400,
    tile_pad: int = 10,
    device: str | torch.device = "cpu",
) -> Upsampler | None:
    """The background upsampler ``Paste`` names: None for "bicubic" (the default resize),
    an ``RRDBUpsampler`` of ``weights`` for "realesrgan", or ``kind`` itself when callable."""
    if kind is None or kind == "bicubic":
        return None
    if callable(kind):
        return kind
    if kind != "realesrgan":
        raise ValueError(f"bg_upsampler={kind!r}: choose {' or '.join(BG_UPSAMPLERS)}")
    if weights is None:
        raise ValueError(
            "bg_upsampler=realesrgan needs bg_weights=PATH: a RealESRNet / Real-ESRGAN RRDB file "
            "(GPEN's realesrnet_x2.pth / realesrnet_x4.pth, RealESRGAN_x4plus.pth, ...)"
        )
    return RRDBUpsampler(weights, tile=tile, tile_pad=tile_pad, device=device)
