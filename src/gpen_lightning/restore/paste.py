"""Paste-back: soft face masks, inverse warps into each face's region, and compositing."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import kornia.filters as KF
import kornia.geometry.transform as KT
import numpy as np
import torch
from kornia.filters.kernels import get_pascal_kernel_2d
from torchvision.utils import draw_bounding_boxes, draw_keypoints

if TYPE_CHECKING:
    from gpen_lightning.restore.detect import Face

__all__ = [
    "composite",
    "draw_faces",
    "face_mask",
    "hull_mask",
    "inverse_warp_roi",
    "seam_energy",
    "smooth_small",
]


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


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (counter-clockwise in image coordinates, y down) of (N, 2) points: (K, 2)."""
    pts = sorted(map(tuple, np.asarray(points, np.float64)))

    def half(seq):
        out: list[tuple[float, float]] = []
        for p in seq:
            while len(out) >= 2:
                (ax, ay), (bx, by) = out[-2], out[-1]
                if (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax) > 0:
                    break
                out.pop()
            out.append(p)
        return out[:-1]

    return np.array(half(pts) + half(pts[::-1]))


def face_region(landmarks: np.ndarray) -> np.ndarray:
    """Points outlining the face (brow to chin, temple to temple) from its 5 landmarks (5, 2):
    the eyes' axis ``u`` and the eyes-to-mouth vector ``v`` place forehead, temples, jaw and chin
    where they are on an average face: (12, 2)."""
    le, re, nose, lm, rm = np.asarray(landmarks, np.float64)
    u, e, m = re - le, (le + re) / 2, (lm + rm) / 2
    v = m - e
    return np.stack(
        [
            # forehead, temples, cheeks, jaw, chin: left and right
            *(e - 1.1 * v - 0.35 * u, e - 1.1 * v + 0.35 * u),
            *(le - 0.5 * u - 0.5 * v, re + 0.5 * u - 0.5 * v),
            *(le - 0.55 * u + 0.3 * v, re + 0.55 * u + 0.3 * v),
            *(lm - 0.35 * u + 0.35 * v, rm + 0.35 * u + 0.35 * v),
            *(m + 0.6 * v - 0.2 * u, m + 0.6 * v + 0.2 * u),
            nose,
            e,
        ]
    )


def hull_mask(size: int, landmarks: np.ndarray, *, feather: float = 0.1) -> torch.Tensor:
    """A face's own soft region in its aligned crop: the convex hull of ``face_region`` of its
    landmarks (5, 2) in crop pixels, shrunk by ``feather`` * eye distance and blurred by a
    Gaussian of that sigma, so the soft edge ends at the hull; times the template square's mask
    so that it fades out before the crop's border whatever the landmarks: (1, 1, S, S)."""
    pts = np.asarray(landmarks, np.float64)
    sigma = max(feather * float(np.linalg.norm(pts[1] - pts[0])), 0.5)
    hull = _hull(face_region(pts))
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float64),
        torch.arange(size, dtype=torch.float64),
        indexing="ij",
    )
    inside = torch.ones(size, size, dtype=torch.bool)
    for (ax, ay), (bx, by) in zip(hull, np.roll(hull, -1, axis=0)):
        # signed distance to the edge line; inside is where every edge agrees, shrunk by sigma
        nx, ny = by - ay, ax - bx
        norm = math.hypot(nx, ny) or 1.0
        inside &= ((xx - ax) * nx + (yy - ay) * ny) / norm <= -sigma
    m = inside.float()[None, None]
    k = min(2 * math.ceil(3 * sigma) + 1, size - (1 - size % 2))
    return KF.gaussian_blur2d(m, (k, k), (sigma, sigma), border_type="constant") * _square(size)


@functools.lru_cache(maxsize=4)
def _square(size: int) -> torch.Tensor:
    return face_mask(size)


def seam_energy(background: torch.Tensor, face: torch.Tensor, mask: torch.Tensor) -> float:
    """What a paste adds at its border: the RMS over the mask's transition band (0.02 < M <
    0.98) of ``(F - B) * grad M``, the term the product rule adds to the composite's gradient
    ``grad(M F + (1 - M) B)`` beyond the blend of both images' own gradients. ``background`` B and
    ``face`` F (3, H, W) in [0, 1], ``mask`` M (1, H, W), all in the same (image) frame."""
    gy, gx = torch.gradient(mask[0])
    band = (mask[0] > 0.02) & (mask[0] < 0.98)
    if not band.any():
        return 0.0
    diff = (face - background).abs().mean(0)
    term = diff * torch.sqrt(gx**2 + gy**2)
    return float(term[band].pow(2).mean().sqrt())


def inverse_warp_roi(
    crop: torch.Tensor, matrix: np.ndarray, height: int, width: int
) -> tuple[torch.Tensor, tuple[int, int, int, int]] | None:
    """Warp one crop (C, s, s) back into the image, only over the region it covers.

    ``matrix``: (2, 3) image -> crop. Returns (patch (C, h, w), (y0, y1, x0, x1)) or None when
    the crop falls outside the image.
    """
    s = crop.shape[-1]
    inv = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))  # crop -> image
    corners = np.array([[0, 0, 1], [s - 1, 0, 1], [0, s - 1, 1], [s - 1, s - 1, 1]], float)
    pts = (corners @ inv.T)[:, :2]
    x0, y0 = np.floor(pts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], float)  # image -> ROI coordinates
    m_roi = torch.as_tensor((shift @ inv)[:2]).to(crop)  # crop -> ROI
    patch = KT.warp_affine(crop[None], m_roi[None], (y1 - y0, x1 - x0), align_corners=True)
    return patch[0], (y0, y1, x0, x1)  # bilinear, zero outside the crop (kornia's defaults)


def composite(
    background: torch.Tensor,
    faces: torch.Tensor,
    matrices: list[np.ndarray],
    mask: torch.Tensor,
) -> torch.Tensor:
    """Blend restored faces (B, 3, s, s) into ``background`` (3, H, W), both float in [0, 1].

    Each face and its soft ``mask`` ((1 or B), 1, s, s: one for all faces or one each) are warped
    back into the face's region; the blend weight is the per-pixel max M of the masks, the face
    colour the mask-weighted mean of the overlapping faces: ``bg * (1 - M) + face * M``.
    """
    _, h, w = background.shape
    num = torch.zeros_like(background)
    den = torch.zeros_like(background[:1])
    top = torch.zeros_like(background[:1])
    masks = mask.expand(len(faces), -1, -1, -1) if len(mask) == 1 else mask
    for face, m_face, matrix in zip(faces, masks, matrices):
        warped = inverse_warp_roi(torch.cat([face, m_face.to(face)]), matrix, h, w)
        if warped is None:
            continue
        patch, (y0, y1, x0, x1) = warped
        rgb, m = patch[:3], patch[3:].clamp(0, 1)
        num[:, y0:y1, x0:x1] += rgb * m
        den[:, y0:y1, x0:x1] += m
        torch.maximum(top[:, y0:y1, x0:x1], m, out=top[:, y0:y1, x0:x1])
    face_rgb = num / den.clamp_min(1e-6)
    return background * (1 - top) + face_rgb * top


def draw_faces(image: np.ndarray, boxes, landmarks) -> np.ndarray:
    """(H, W, 3) uint8 with each box (x0, y0, x1, y1) outlined and its 5 landmarks marked."""
    if not len(boxes):
        return image
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    width = max(1, round(max(image.shape[:2]) / 400))
    t = draw_bounding_boxes(t, torch.as_tensor(np.stack(boxes)), colors="lime", width=width)
    pts = torch.as_tensor(np.stack(landmarks), dtype=torch.float32)
    t = draw_keypoints(t, pts, colors="red", radius=width + 1)
    return t.permute(1, 2, 0).numpy()


def smooth_small(restored: torch.Tensor, faces: Sequence[Face], min_side: float) -> torch.Tensor:
    """Restored crops (B, 3, S, S) with the faces whose box has a side shorter than ``min_side``
    filtered by the separable [1, 2, 1] / 4 kernel (reflected border, as OpenCV's filter2D)."""
    small = torch.tensor([min(f.box[2] - f.box[0], f.box[3] - f.box[1]) < min_side for f in faces])
    if not small.any():
        return restored
    out = restored.clone()
    kernel = get_pascal_kernel_2d(3, norm=True)[None].to(restored)  # [1,2,1] x [1,2,1] / 16
    out[small] = KF.filter2d(restored[small], kernel, border_type="reflect")
    return out
