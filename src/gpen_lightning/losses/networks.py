"""Pretrained networks behind the optional losses, loaded from local files only.

- ``IRSE``: the ArcFace IR-SE face-embedding network (``model_ir_se50.pth``, the identity loss of
  the official GPEN training script); depth and widths are read from the state dict.
- ``load_lpips``: LPIPS (the reference ``lpips`` package) with its bundled linear heads and a
  torchvision AlexNet / VGG16 backbone file (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``).

Nothing is downloaded: a missing file raises ``MissingWeightsError`` (``gpen_lightning.io``)
naming the file and how to get it. The FID network is a metric: ``gpen_lightning.metrics.fid``.
"""

from __future__ import annotations

import os
import re
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from gpen_lightning.io import MissingWeightsError, require_weights

# MissingWeightsError: re-exported, the loaders here raise it
__all__ = ["IRSE", "MissingWeightsError", "face_crop_112", "load_identity", "load_lpips"]


class _SE(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(w))))


class _IRSEUnit(nn.Module):
    """Residual unit: BN-conv-PReLU-conv(stride)-BN-SE plus a (projected) shortcut."""

    def __init__(self, in_ch: int, depth: int, stride: int, reduction: int) -> None:
        super().__init__()
        if in_ch == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_ch, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            _SE(depth, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE(nn.Module):
    """ArcFace IR-SE backbone (112x112 input): image (B, 3, 112, 112) in [-1, 1] -> unit
    embedding (B, E).

    Args:
        widths: output channels of every residual unit in order; a unit whose width differs from
            the previous one (and the first) starts a stage and has stride 2. IR-SE50 is
            ``[64]*3 + [128]*4 + [256]*14 + [512]*3``.
        stem: channels of the input layer; embedding: E; reduction: SE reduction.
    """

    def __init__(
        self, widths: list[int], *, stem: int = 64, embedding: int = 512, reduction: int = 16
    ) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.PReLU(stem)
        )
        strides = [2 if i == 0 or w != widths[i - 1] else 1 for i, w in enumerate(widths)]
        ins = [stem, *widths[:-1]]
        self.body = nn.Sequential(
            *(_IRSEUnit(c, w, s, reduction) for c, w, s in zip(ins, widths, strides))
        )
        in_ch, side = widths[-1], 112 // 2 ** strides.count(2)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Dropout(0.4),
            nn.Flatten(),
            nn.Linear(in_ch * side * side, embedding),
            nn.BatchNorm1d(embedding),
        )

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> IRSE:
        """Rebuild the architecture from the tensor shapes and load the weights (strict)."""
        rx = re.compile(r"body\.(\d+)\.res_layer\.1\.weight")
        convs = sorted((int(m.group(1)), v) for k, v in state.items() if (m := rx.fullmatch(k)))
        if not convs or "input_layer.0.weight" not in state:
            raise ValueError("not an IR-SE state dict (expected input_layer.* and body.N.*)")
        widths = [v.shape[0] for _, v in convs]
        se = state["body.0.res_layer.5.fc1.weight"]
        net = cls(
            widths,
            stem=state["input_layer.0.weight"].shape[0],
            embedding=state["output_layer.3.weight"].shape[0],
            reduction=widths[0] // se.shape[0],
        )
        net.load_state_dict(state)
        return net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(x, dim=1)


def face_crop_112(images: torch.Tensor) -> torch.Tensor:
    """FFHQ-aligned faces (B, 3, S, S) -> the ArcFace input (B, 3, 112, 112), as the official
    script does: crop rows 35k:S-33k and columns 32k:S-36k (k = S / 256), pool to 112. Sizes that
    are not a multiple of 256 (the tiny presets; the official crop is undefined there) are resized
    to 256 first (bilinear) and cropped with k = 1."""
    s = images.shape[-1]
    if s % 256:
        images, s = F.interpolate(images, size=(256, 256), mode="bilinear"), 256
    k = s // 256
    crop = images[:, :, 35 * k : s - 33 * k, 32 * k : s - 36 * k]
    return F.adaptive_avg_pool2d(crop, (112, 112))


def load_identity(path: str | os.PathLike[str] | None) -> IRSE:
    """The frozen IR-SE embedding network from a local ``model_ir_se50.pth``-style state dict."""
    path = require_weights(
        path,
        what="the identity loss (module.id_weight > 0)",
        how="download the ArcFace IR-SE50 weights used by the official GPEN training script "
        "(model_ir_se50.pth, from the pSp / InsightFace_Pytorch releases) and pass "
        "module.id_weights=/path/to/model_ir_se50.pth (id_weights=... for stage=evaluate)",
    )
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return IRSE.from_state_dict(state).eval().requires_grad_(False)


_BACKBONES = {"alex": "alexnet", "vgg": "vgg16"}
_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


def load_lpips(path: str | os.PathLike[str] | None, net: str = "alex") -> nn.Module:
    """LPIPS (frozen): the reference ``lpips.LPIPS`` network with its bundled linear heads and the
    torchvision ``net`` backbone read from ``path``. Call ``lpips(x, y)`` on [-1, 1] images ->
    (B, 1, 1, 1)."""
    if net not in _BACKBONES:
        raise ValueError(f"LPIPS backbone must be one of {sorted(_BACKBONES)}, got {net!r}")
    name = _BACKBONES[net]
    path = require_weights(
        path,
        what="LPIPS",
        how=f"download torchvision's ImageNet {name} weights "
        f"(https://download.pytorch.org/models/{_BACKBONE_FILES[net]}) and pass its path "
        "(module.lpips_weights=PATH when training, lpips_weights=PATH for stage=evaluate)",
    )
    import lpips as lpips_lib  # the reference implementation (Zhang et al. 2018)
    import torchvision

    with warnings.catch_warnings():  # lpips 0.1.4 calls torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        # bundled linear heads; pnet_rand: no backbone download (the weights come from `path`)
        lpips = lpips_lib.LPIPS(net=net, pnet_rand=True, verbose=False)
    backbone = getattr(torchvision.models, name)(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    if not features:
        raise ValueError(f"{path} has no 'features.*' tensors: not a torchvision {name} file")
    backbone.features.load_state_dict({k.removeprefix("features."): v for k, v in features.items()})
    for stage in (m for n, m in lpips.net.named_children() if n.startswith("slice")):
        for idx, layer in stage.named_children():
            layer.load_state_dict(backbone.features[int(idx)].state_dict())
    return lpips.eval().requires_grad_(False)
