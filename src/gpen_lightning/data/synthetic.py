"""``SyntheticFaces``: deterministic procedural face-like images, the data-free default.

Not photorealism: face structure (head, hair, ears, eyes with iris and pupil, brows, nose, mouth)
on a textured background, with skin pores and hair strands as high-frequency detail, so that
blur, noise and JPEG destroy something a restoration network can learn to bring back.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from gpen_lightning.data.seeds import stream_seed
from gpen_lightning.ranges import to_uint8

__all__ = ["SyntheticFaces", "render_face"]


class _Canvas:
    """Float RGB canvas on [-1, 1]^2 coordinates with soft-edged (anti-aliased) shapes."""

    def __init__(self, size: int, g: torch.Generator) -> None:
        self.size, self.g = size, g
        ax = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
        self.y, self.x = torch.meshgrid(ax, ax, indexing="ij")
        self.img = torch.zeros(3, size, size)

    def rand(self, lo: float = 0.0, hi: float = 1.0, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape or (), generator=self.g)

    def noise(self, scale: int) -> torch.Tensor:
        """Smooth noise with features ~size/scale px, in [-1, 1]."""
        coarse = torch.rand(1, 1, scale + 1, scale + 1, generator=self.g) * 2 - 1
        up = torch.nn.functional.interpolate(coarse, size=(self.size, self.size), mode="bicubic")
        return up[0, 0].clamp(-1, 1)

    def ellipse(self, cy, cx, ry, rx, angle=0.0) -> torch.Tensor:
        """Soft mask (H, W) of a rotated ellipse; ~1 px transition."""
        c, s = math.cos(angle), math.sin(angle)
        u, v = (self.x - cx) * c + (self.y - cy) * s, -(self.x - cx) * s + (self.y - cy) * c
        d = torch.sqrt((u / rx) ** 2 + (v / ry) ** 2)
        # (1 - d) * min radius ~ signed distance inside; a 1-px linear ramp, exactly 0 outside
        return ((1 - d) * min(rx, ry) * self.size / 2 + 0.5).clamp(0, 1)

    def paint(self, mask: torch.Tensor, color: torch.Tensor) -> None:
        color = color.view(3, 1, 1) if color.ndim == 1 else color
        self.img = self.img * (1 - mask) + color * mask


def render_face(size: int, generator: torch.Generator) -> torch.Tensor:
    """One face-like image (3, size, size) uint8, fully determined by ``generator``'s state."""
    cv = _Canvas(size, generator)
    r = cv.rand
    # background: vertical gradient between two colours, blotches, fine grain
    top, bottom = r(0, 1, 3), r(0, 1, 3)
    t = (cv.y + 1) / 2
    cv.img = top.view(3, 1, 1) * (1 - t) + bottom.view(3, 1, 1) * t
    cv.img = (
        cv.img + 0.15 * cv.noise(4) + 0.04 * (torch.rand(3, size, size, generator=generator) - 0.5)
    )
    skin = (torch.tensor([0.95, 0.75, 0.6]) * r(0.45, 1.05) + r(-0.05, 0.05, 3)).view(3, 1, 1)
    hair = (r(0.02, 0.6) * torch.tensor([1.0, 0.8, 0.6]) + r(0, 0.1, 3)).view(3, 1, 1)
    cy, cx, hy, hx = r(-0.05, 0.1), r(-0.06, 0.06), r(0.55, 0.66), r(0.42, 0.5)
    strands = torch.sin(cv.x * r(60, 110) + 3 * cv.noise(6)) * 0.12 + 0.06 * cv.noise(32)
    # hair behind the head, neck, ears
    cv.paint(cv.ellipse(cy - 0.12, cx, hy + 0.12, hx + 0.1), hair + strands)
    cv.paint(cv.ellipse(cy + 0.75, cx, 0.35, 0.24), skin * 0.8)
    for side in (-1, 1):
        cv.paint(cv.ellipse(cy + 0.02, cx + side * hx, 0.13, 0.07), skin * 0.9)
    # head with shading and pores
    d2 = ((cv.x - cx) / hx) ** 2 + ((cv.y - cy) / hy) ** 2
    pores = 0.05 * (torch.rand(size, size, generator=generator) - 0.5) + 0.03 * cv.noise(48)
    cv.paint(cv.ellipse(cy, cx, hy, hx), skin * (1 - 0.25 * d2) + pores)
    # fringe: hair over the top of the head
    fringe = cv.ellipse(cy - hy * 0.75, cx + r(-0.1, 0.1), hy * 0.45, hx * 1.02)
    cv.paint(fringe * cv.ellipse(cy, cx, hy * 1.01, hx * 1.01), hair + strands)
    # eyes: sclera, iris, pupil, highlight, lid line; brows above
    ey, ex, iris = cy + r(-0.12, -0.02), r(0.15, 0.21), r(0, 0.7, 3).view(3, 1, 1)
    for side in (-1, 1):
        x0 = cx + side * ex
        cv.paint(cv.ellipse(ey, x0, 0.05, 0.095) - cv.ellipse(ey, x0, 0.04, 0.085), skin * 0.35)
        cv.paint(cv.ellipse(ey, x0, 0.042, 0.085), torch.tensor([0.93, 0.92, 0.9]))
        gaze = r(-0.03, 0.03)
        cv.paint(cv.ellipse(ey, x0 + gaze, 0.038, 0.038), iris + 0.08 * cv.noise(64))
        cv.paint(cv.ellipse(ey, x0 + gaze, 0.017, 0.017), torch.zeros(3))
        cv.paint(cv.ellipse(ey - 0.012, x0 + gaze + 0.012, 0.007, 0.007), torch.ones(3))
        arc = cv.ellipse(ey - 0.06, x0, 0.06, 0.12) - cv.ellipse(ey - 0.045, x0, 0.06, 0.12)
        cv.paint(arc.clamp(0, 1), hair * 0.8 + 0.1 * strands)
    # nose: bridge shading and nostrils
    ny = cy + r(0.12, 0.18)
    for side in (-1, 1):
        cv.paint(0.5 * cv.ellipse(ny - 0.08, cx + side * 0.045, 0.1, 0.012), skin * 0.75)
        cv.paint(cv.ellipse(ny, cx + side * 0.035, 0.015, 0.025), skin * 0.35)
    # mouth: lips and the line between them
    my, mw = cy + r(0.3, 0.38), r(0.12, 0.18)
    lips = (torch.tensor([0.75, 0.3, 0.3]) * r(0.7, 1.1)).view(3, 1, 1)
    cv.paint(cv.ellipse(my, cx, 0.045, mw), lips)
    cv.paint(cv.ellipse(my, cx, 0.008, mw * 0.95), lips * 0.3)
    return to_uint8(cv.img)


class SyntheticFaces(Dataset):
    """``length`` procedural faces at ``size`` px; item i is the same image on every call.

    Items are dicts ``{"hq": uint8 (3, S, S), "index": int}``; ``flip`` mirrors at random.
    Rendering takes ~10 ms a face (more than a tiny-32 training step spends per image), so
    rendered faces are kept in memory when all ``length`` of them fit in ``cache_mb`` (each
    loader worker keeps its own).
    """

    def __init__(
        self,
        *,
        size: int,
        length: int = 1000,
        seed: int = 0,
        flip: bool = True,
        cache_mb: float = 256.0,
    ) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.size, self.length, self.seed, self.flip = size, length, seed, flip
        fits = length * 3 * size * size <= cache_mb * 2**20
        self._cache: dict[int, torch.Tensor] | None = {} if fits else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        img = self._cache.get(index) if self._cache is not None else None
        if img is None:
            g = torch.Generator().manual_seed(stream_seed(self.seed, index))
            img = render_face(self.size, g)
            if self._cache is not None:
                self._cache[index] = img
        if self.flip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return {"hq": img, "index": index}
