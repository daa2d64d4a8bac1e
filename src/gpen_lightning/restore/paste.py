"""Paste-back: soft face masks, inverse warps into each face's region, and compositing."""

from __future__ import annotations

import math

import kornia.filters as KF
import kornia.geometry.transform as KT
import numpy as np
import torch

__all__ = ["composite", "face_mask", "inverse_warp_roi"]


def face_mask(size: int, *, border: float = 26 / 512, sigma: float = 4 / 512) -> torch.Tensor:
    """The template's soft face region: ones with a zeroed border (26 px at 512) blurred twice
    by a Gaussian (sigma 4 px at 512, 101 px kernel), as the official paste-back: (1, 1, S, S)."""
    m = torch.zeros(1, 1, size, size)
    b = max(1, round(border * size))
    m[..., b:-b, b:-b] = 1
    s = max(sigma * size, 0.5)
    k = min(2 * math.ceil(3 * s) + 1, 101 if size >= 101 else size - (1 - size % 2))
    for _ in range(2):
        m = KF.gaussian_blur2d(m, (k, k), (s, s), border_type="constant")
    return m


def inverse_warp_roi(
    crop: torch.Tensor, matrix: np.ndarray, height: int, width: int
) -> tuple[torch.Tensor, tuple[int, int, int, int]] | None:
    """Warp one crop (C, s, s) back into the image, only over the region it covers.

    ``matrix``: (2, 3) image -> crop. Returns (patch (C, h, w), (y0, y1, x0, x1)) or None when
    the crop falls outside the image.
    """
    s = crop.shape[-1]
    fwd = np.vstack([matrix, [0, 0, 1]])
    inv = np.linalg.inv(fwd)  # crop -> image
    corners = np.array([[0, 0, 1], [s - 1, 0, 1], [0, s - 1, 1], [s - 1, s - 1, 1]], float)
    pts = (corners @ inv.T)[:, :2]
    x0, y0 = np.floor(pts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], float)  # image -> ROI coordinates
    m_roi = (shift @ inv)[:2]  # crop -> ROI
    patch = KT.warp_affine(
        crop[None],
        torch.as_tensor(m_roi, dtype=crop.dtype, device=crop.device)[None],
        (y1 - y0, x1 - x0),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )[0]
    return patch, (y0, y1, x0, x1)


def composite(
    background: torch.Tensor,
    faces: torch.Tensor,
    matrices: list[np.ndarray],
    mask: torch.Tensor,
) -> torch.Tensor:
    """Blend restored faces (B, 3, s, s) into ``background`` (3, H, W), both float in [0, 1].

    Each face and its soft ``mask`` (1, 1, s, s) are warped back into the face's region; the
    blend weight is the per-pixel max M of the masks, the face colour the mask-weighted mean of
    the overlapping faces: ``bg * (1 - M) + face * M``.
    """
    _, h, w = background.shape
    num = torch.zeros_like(background)
    den = torch.zeros_like(background[:1])
    top = torch.zeros_like(background[:1])
    for face, matrix in zip(faces, matrices):
        warped = inverse_warp_roi(torch.cat([face, mask[0].to(face)]), matrix, h, w)
        if warped is None:
            continue
        patch, (y0, y1, x0, x1) = warped
        rgb, m = patch[:3], patch[3:].clamp(0, 1)
        num[:, y0:y1, x0:x1] += rgb * m
        den[:, y0:y1, x0:x1] += m
        torch.maximum(top[:, y0:y1, x0:x1], m, out=top[:, y0:y1, x0:x1])
    face_rgb = num / den.clamp_min(1e-6)
    return background * (1 - top) + face_rgb * top
