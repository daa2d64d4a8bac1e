"""Alignment: least-squares similarity transforms onto a 5-point template, batched warps and
resizes."""

from __future__ import annotations

import kornia.geometry.transform as KT
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["TEMPLATES", "resize", "similarity_transform", "template", "warp_to"]

# (x, y) at 512 px: left eye, right eye, nose tip, left / right mouth corner.
TEMPLATES = {
    "ffhq": np.array(
        [
            [192.98138, 239.94708],
            [318.90277, 240.1936],
            [256.63416, 314.01935],
            [201.26117, 371.41043],
            [313.08905, 371.15118],
        ],
        dtype=np.float64,
    ),
    "gpen": np.array(
        [[202.04, 242.88], [309.43, 242.29], [256.08, 303.96], [211.96, 366.83], [300.89, 366.34]],
        dtype=np.float64,
    ),
}


def template(name: str = "ffhq", size: int = 512) -> np.ndarray:
    """The 5-point template ``name`` scaled to a ``size`` px crop: (5, 2)."""
    try:
        return TEMPLATES[name] * (size / 512)
    except KeyError:
        raise ValueError(f"unknown template {name!r}; available: {sorted(TEMPLATES)}") from None


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The similarity (rotation, uniform scale, translation; no reflection) that maps ``src``
    points onto ``dst`` in the least-squares sense (Umeyama): (N, 2), (N, 2) -> (2, 3)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    scale = (sig * np.diag(sign)).sum() / s.var(0).sum()
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def warp_to(image: torch.Tensor, matrices: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear crops (B, C, size, size) of one image (C, H, W) under affine ``matrices``
    (B, 2, 3) (image -> crop coordinates). Outside the image the border is replicated."""
    src = image.unsqueeze(0).expand(len(matrices), -1, -1, -1)
    return KT.warp_affine(
        src, matrices.to(src), (size, size), padding_mode="border", align_corners=True
    )


def resize(
    image: torch.Tensor, size: tuple[int, int], *, mode: str = "bicubic", antialias: bool = True
) -> torch.Tensor:
    """(C, H, W) float -> (C, *size) by ``mode`` with half-pixel centres, unchanged when already
    that size; ``antialias=False`` resizes as OpenCV does (bilinear: its ``INTER_LINEAR``)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode=mode, antialias=antialias)[0]
