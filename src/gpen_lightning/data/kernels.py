"""Per-sample random tensors that kornia does not provide: rotated anisotropic Gaussian kernels,
variable-length motion kernels and brush-stroke masks. All batched, on any device and dtype."""

from __future__ import annotations

import torch

__all__ = ["brush_masks", "gaussian_kernels", "motion_kernels", "segment_distance"]


def _grid(size: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (size, size) centred on the middle tap: (y, x)."""
    ax = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    return torch.meshgrid(ax, ax, indexing="ij")


def gaussian_kernels(
    sigma_x: torch.Tensor, sigma_y: torch.Tensor, theta: torch.Tensor, size: int
) -> torch.Tensor:
    """Normalised Gaussian kernels with covariance R(theta) diag(sx^2, sy^2) R(theta)^T.

    Args:
        sigma_x, sigma_y, theta: (B,) standard deviations (pixels) and rotation (radians).
        size: odd kernel size K.

    Returns:
        (B, K, K) kernels summing to 1.
    """
    yy, xx = _grid(size, sigma_x.device, sigma_x.dtype)
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    u = c * xx + s * yy  # coordinates along the rotated axes
    v = -s * xx + c * yy
    k = torch.exp(-0.5 * ((u / sigma_x[:, None, None]) ** 2 + (v / sigma_y[:, None, None]) ** 2))
    return k / k.sum((1, 2), keepdim=True)


def segment_distance(
    py: torch.Tensor, px: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """Distance from points (..., H, W) to segments a -> b given as (N, 2) (y, x): (N, H, W)."""
    ay, ax = a[:, 0, None, None], a[:, 1, None, None]
    dy, dx = (b[:, 0] - a[:, 0])[:, None, None], (b[:, 1] - a[:, 1])[:, None, None]
    t = ((py - ay) * dy + (px - ax) * dx) / (dy * dy + dx * dx).clamp_min(1e-12)
    t = t.clamp(0, 1)
    return torch.hypot(py - (ay + t * dy), px - (ax + t * dx))


def motion_kernels(length: torch.Tensor, angle: torch.Tensor, size: int) -> torch.Tensor:
    """Linear motion-blur kernels: an anti-aliased centred line of ``length`` px at ``angle``.

    Args:
        length: (B,) line lengths in pixels (<= size).
        angle: (B,) direction in radians.
        size: odd kernel size K.

    Returns:
        (B, K, K) kernels summing to 1.
    """
    yy, xx = _grid(size, length.device, length.dtype)
    half = (length / 2)[:, None]
    d = torch.stack([torch.sin(angle), torch.cos(angle)], 1)  # (B, 2) as (y, x)
    dist = segment_distance(yy, xx, -half * d, half * d)
    k = (1 - dist).clamp_min(0)  # 1-pixel-wide tent around the segment
    return k / k.sum((1, 2), keepdim=True)


def brush_masks(
    batch: int,
    size: int,
    *,
    strokes: tuple[int, int] = (1, 3),
    vertices: tuple[int, int] = (8, 28),
    width: tuple[float, float] = (12, 80),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Random free-form brush strokes (random-walk polylines with round joints).

    Widths are given at 512 px and scaled by ``size / 512``; each stroke has its own width and a
    random number of vertices; steps are up to a quarter of the image.

    Returns:
        (B, 1, size, size) float mask in {0, 1}, 1 where painted.
    """
    scale = size / 512
    yy, xx = _grid(size, torch.device(device), torch.float32)
    yy, xx = yy + (size - 1) / 2, xx + (size - 1) / 2
    masks = torch.zeros(batch, 1, size, size, device=device)
    lo, hi = width
    for i in range(batch):
        n_strokes = int(torch.randint(strokes[0], strokes[1] + 1, (), generator=generator))
        for _ in range(n_strokes):
            n_vert = int(torch.randint(vertices[0], vertices[1] + 1, (), generator=generator))
            radius = (lo + (hi - lo) * torch.rand((), generator=generator).item()) * scale / 2
            start = torch.rand(2, generator=generator) * size
            angles = torch.rand(n_vert - 1, generator=generator) * 2 * torch.pi
            steps = torch.rand(n_vert - 1, generator=generator) * size / 4
            moves = torch.stack([torch.sin(angles), torch.cos(angles)], 1) * steps[:, None]
            pts = torch.cat([start[None], start[None] + moves.cumsum(0)]).clamp(0, size - 1)
            pts = pts.to(device, non_blocking=True)  # a fresh pageable source: staged at once
            dist = segment_distance(yy, xx, pts[:-1], pts[1:])  # (segments, H, W)
            masks[i, 0] = torch.maximum(masks[i, 0], (dist.amin(0) <= radius).float())
    return masks
