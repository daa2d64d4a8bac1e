"""The official GPEN demo's other tasks on aligned faces, with its preprocessing:

- ``colorization`` (GPEN-Colorization-1024): the face as gray (BT.601 luma in all three
  channels, as the demo reads gray files), bilinear resize to S (OpenCV ``INTER_LINEAR``, no
  antialiasing) quantised to 8 bits, [-1, 1]; the colour output is resized back to the input's
  size and its luma replaced by the input's (YUV, as the demo's ``post_process``) when the sizes
  differ.
- ``inpainting`` (GPEN-Inpainting-1024): the face with its holes painted white, fed as it is;
  with ``inpaint_strokes`` the demo's random free-form brush strokes are drawn first (seeded).
  Output at S.
- ``seg2face`` (GPEN-Seg2face-512): a colour-coded parsing map in, a face out; the network works
  in [0, 1] (the demo's ``is_norm=False``), not [-1, 1]. Output at S.

The demo runs them on aligned crops only (its task classes resize the whole input to S), and so
does ``stage=restore``: ``aligned=true``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from gpen_lightning.ranges import to_signed, to_unit
from gpen_lightning.restore.align import resize

__all__ = [
    "TASKS",
    "Task",
    "UnitRange",
    "brush_strokes",
    "check_task_weights",
    "replace_luma",
    "task_crop",
    "task_image",
    "to_gray",
    "weights_task",
]

TASKS = ("restore", "colorization", "inpainting", "seg2face")
# the word each official release carries in its file / preset name
_TAGS = {"restore": "bfr"} | {task: task for task in TASKS[1:]}
LUMA = (0.299, 0.587, 0.114)  # BT.601, OpenCV's RGB -> gray and -> YUV
_YUV_U, _YUV_V = 0.492111, 0.877283  # OpenCV's YUV chroma scales (U = 0.492 (B - Y) + 128 ...)


@dataclass(frozen=True, kw_only=True)
class Task:
    """What the network does with aligned faces.

    Args:
        task: "restore" (default), "colorization", "inpainting" or "seg2face".
        inpaint_strokes: ``task=inpainting``: draw the official demo's random white brush
            strokes on each face first (the demo breaks clean faces that way); False: the
            faces already carry their white holes.
        inpaint_seed: seed of those strokes (one generator per ``Restorer``).
    """

    task: str = "restore"
    inpaint_strokes: bool = False
    inpaint_seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}: choose one of {', '.join(TASKS)}")

    def check(self, *, aligned: bool) -> None:
        """Refuse whole photos for the tasks the official demo only runs on aligned faces."""
        if self.task != "restore" and not aligned:
            raise ValueError(
                f"task={self.task} takes aligned face crops, as the official demo (its task "
                "resizes the whole input to the network's size): set aligned=true"
            )


def weights_task(name: str | os.PathLike | None) -> str:
    """The task an official release's file or preset name was made for ("restore" for the BFR
    networks and for names without a task word: our exports, tiny presets)."""
    lower = Path(name).name.lower().replace("_", "-") if name else ""
    return next((t for t, tag in _TAGS.items() if f"-{tag}-" in lower), "restore")


def check_task_weights(task: str, *, weights: object = None, model: str | None = None) -> None:
    """Refuse an official release (by its file or preset name) made for another task, e.g.
    ``GPEN-Seg2face-512.pth`` with ``task=colorization`` or ``GPEN-BFR-512.pth`` with
    ``task=inpainting``; names without a task word (our exports, tiny presets) pass."""
    name = Path(weights).name if isinstance(weights, str | os.PathLike) else model
    lower = name.lower().replace("_", "-") if name else ""
    for other, tag in _TAGS.items():
        if other != task and f"-{tag}-" in lower:
            raise ValueError(
                f"{name} is the official {other} network, but task={task}: set task={other} "
                f"or give {task} weights"
            )


class UnitRange(nn.Module):
    """A network that works in [0, 1] (seg2face) seen as one in [-1, 1]: (B, 3, S, S) -> same."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.size = getattr(net, "size", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x + 1) / 2) * 2 - 1


def to_gray(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 RGB -> (3, H, W) uint8 with the rounded BT.601 luma in every channel."""
    w = torch.tensor(LUMA).view(3, 1, 1)
    y = (image.float() * w).sum(0).round().clamp(0, 255).to(torch.uint8)
    return y.expand(3, -1, -1).clone()


def replace_luma(colour: torch.Tensor, luma: torch.Tensor) -> torch.Tensor:
    """(3, H, W) float RGB in [0, 255] with its YUV luma replaced by ``luma`` (H, W): OpenCV's
    YUV with the chroma rounded into its 8-bit range (saturated colours clip as in the demo)."""
    r, g, b = colour
    y = LUMA[0] * r + LUMA[1] * g + LUMA[2] * b
    u = ((b - y) * _YUV_U + 128).round().clamp(0, 255) - 128
    v = ((r - y) * _YUV_V + 128).round().clamp(0, 255) - 128
    y = luma.float()
    green = y - (LUMA[0] * v / _YUV_V + LUMA[2] * u / _YUV_U) / LUMA[1]
    return torch.stack([y + v / _YUV_V, green, y + u / _YUV_U]).clamp(0, 255)


def brush_strokes(image: torch.Tensor, rng: np.random.RandomState) -> torch.Tensor:
    """(3, H, W) uint8 with 1-3 random free-form white strokes (the demo's ``brush_stroke_mask``
    recipe: 8-27 vertices at alternating angles around 2 pi / 5, steps ~N(r, r/2) with
    r = diagonal / 8, widths 12-80 px, round joints). ``rng`` draws in the demo's order, so a
    ``RandomState(s)`` gives its strokes after ``np.random.seed(s)`` (square images; the demo
    swaps width and height otherwise)."""
    h, w = image.shape[-2:]
    canvas = Image.fromarray(image.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(canvas)
    radius = math.sqrt(h * h + w * w) / 8
    mean, spread = 2 * math.pi / 5, 2 * math.pi / 15
    for _ in range(rng.randint(1, 4)):
        n = rng.randint(8, 28)
        lo, hi = mean - rng.uniform(0, spread), mean + rng.uniform(0, spread)
        angles = [
            rng.uniform(lo, hi) if i % 2 else 2 * math.pi - rng.uniform(lo, hi) for i in range(n)
        ]
        points = [(int(rng.randint(0, w)), int(rng.randint(0, h)))]
        for a in angles:
            step = np.clip(rng.normal(loc=radius, scale=radius // 2), 0, 2 * radius)
            x = np.clip(points[-1][0] + step * math.cos(a), 0, w)
            y = np.clip(points[-1][1] + step * math.sin(a), 0, h)
            points.append((int(x), int(y)))
        width = int(rng.uniform(12, 80))
        white = (255, 255, 255)
        draw.line(points, fill=white, width=width)
        for x, y in points:
            half = width // 2
            draw.ellipse((x - half, y - half, x + half, y + half), fill=white)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)


def task_crop(
    task: Task, image: torch.Tensor, size: int, rng: np.random.RandomState | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """An aligned face (3, H, W) uint8 -> (what the network is fed at its input's size (3, H, W)
    uint8, the network input (3, S, S) float in [-1, 1]) for a task other than ``restore``."""
    if task.task == "colorization":
        image = to_gray(image)
    elif task.task == "inpainting" and task.inpaint_strokes:
        image = brush_strokes(image, rng if rng is not None else np.random.RandomState(0))
    resized = resize(image.float(), (size, size), mode="bilinear", antialias=False)
    return image, to_signed(resized.round().clamp(0, 255), 255)  # cv2 keeps uint8


def task_image(task: Task, restored: torch.Tensor, fed: torch.Tensor) -> torch.Tensor:
    """The network output (3, S, S) in [-1, 1] -> the task's result, float (3, h, w) in [0, 1]:
    colorization at the input's size with the input's luma (when the sizes differ, as the
    demo), the others at S."""
    out = to_unit(restored).clamp(0, 1)
    if task.task != "colorization" or tuple(out.shape[-2:]) == tuple(fed.shape[-2:]):
        return out
    quantised = (out * 255).round()  # the demo resizes its uint8 output
    colour = resize(quantised, tuple(fed.shape[-2:]), mode="bilinear", antialias=False)
    return replace_luma(colour.round().clamp(0, 255), fed[0]) / 255
