"""Faces across video frames: IoU association into tracks and One-Euro smoothing of each track's
box and 5 landmarks, so that the aligned crops do not jitter with the detector's noise."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

from gpen_lightning.restore.detect import Face

__all__ = ["FaceTracker", "OneEuroFilter", "crop_flicker", "landmark_jitter"]


class OneEuroFilter:
    """The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) on a vector signal: a first-order
    low-pass whose cutoff rises with the signal's speed, so slow drift (detector noise on a still
    face) is smoothed hard while fast motion follows with little lag.

    Args:
        min_cutoff: cutoff (Hz) at zero speed; lower smooths more.
        beta: how fast the cutoff rises with speed (per unit of speed).
        d_cutoff: cutoff (Hz) of the low-pass on the speed estimate.
    """

    def __init__(self, *, min_cutoff: float = 1.0, beta: float = 0.5, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        """Filter sample ``x`` (any shape) taken ``dt`` seconds after the previous one."""
        x = np.asarray(x, np.float64)
        if self.x is None:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x.copy()
        dx = (x - self.x) / dt
        self.dx = self.dx + self._alpha(self.d_cutoff, dt) * (dx - self.dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self.dx)
        self.x = self.x + self._alpha(cutoff, dt) * (x - self.x)
        return self.x.copy()


@dataclass
class _Track:
    id: int
    box: np.ndarray  # last raw detection box: the association uses what the detector sees
    scale: float  # face size at the start (px): the filter runs in units of it
    filter: OneEuroFilter
    missed: int = 0


class FaceTracker:
    """Associate each frame's detections with the previous frames' faces by box IoU (greedy, best
    first) and smooth every track's box and landmarks with a ``OneEuroFilter`` running in units
    of the face's size (so one setting suits small and large faces).

    Args:
        fps: frame rate (the filter's time step is 1 / fps).
        min_cutoff, beta: the One-Euro parameters (Hz; per face-size per second).
        iou_threshold: least IoU for a detection to continue a track.
        max_missed: frames a track survives without a detection (the face is not restored in
            those frames; a detection after that starts a new track).
        smooth: False returns the detections unchanged (the tracks are still kept: ``ids``).
    """

    def __init__(
        self,
        *,
        fps: float = 25.0,
        min_cutoff: float = 0.5,
        beta: float = 2.0,
        iou_threshold: float = 0.3,
        max_missed: int = 5,
        smooth: bool = True,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.dt, self.min_cutoff, self.beta = 1.0 / fps, min_cutoff, beta
        self.iou_threshold, self.max_missed, self.smooth = iou_threshold, max_missed, smooth
        self.tracks: list[_Track] = []
        self.ids: list[int] = []  # track id of each face returned by the last update
        self._next_id = 0

    def _match(self, faces: Sequence[Face]) -> dict[int, int]:
        """Detection index -> track index, greedily by decreasing IoU."""
        if not faces or not self.tracks:
            return {}
        iou = box_iou(
            torch.as_tensor(np.stack([f.box for f in faces]), dtype=torch.float64),
            torch.as_tensor(np.stack([t.box for t in self.tracks]), dtype=torch.float64),
        ).numpy()
        pairs: dict[int, int] = {}
        for flat in np.argsort(-iou, axis=None):
            d, t = divmod(int(flat), iou.shape[1])
            if iou[d, t] < self.iou_threshold:
                break
            if d not in pairs and t not in pairs.values():
                pairs[d] = t
        return pairs

    def update(self, faces: Sequence[Face]) -> list[Face]:
        """One frame's detections -> the same faces with smoothed boxes and landmarks."""
        pairs = self._match(faces)
        out, self.ids = [], []
        for d, face in enumerate(faces):
            if d in pairs:
                track = self.tracks[pairs[d]]
            else:
                track = _Track(
                    self._next_id,
                    face.box,
                    max(face.size, 1.0),
                    OneEuroFilter(min_cutoff=self.min_cutoff, beta=self.beta),
                )
                self._next_id += 1
                self.tracks.append(track)
            track.box = face.box
            self.ids.append(track.id)
            if not self.smooth:
                out.append(face)
                continue
            x = np.concatenate([face.box, face.landmarks.reshape(-1)]) / track.scale
            y = track.filter(x, self.dt) * track.scale
            out.append(
                Face(y[:4].astype(np.float32), y[4:].reshape(5, 2).astype(np.float32), face.score)
            )
        for track in self.tracks:
            track.missed = 0 if track.id in self.ids else track.missed + 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return out


def landmark_jitter(points: np.ndarray) -> float:
    """Mean magnitude (px) of the landmarks' second difference over time: (T, ..., 2) -> float.
    Zero for motion at constant velocity; detector noise shows up in full."""
    p = np.asarray(points, np.float64)
    if len(p) < 3:
        return 0.0
    acc = p[2:] - 2 * p[1:-1] + p[:-2]
    return float(np.linalg.norm(acc, axis=-1).mean())


def crop_flicker(crops: Sequence[np.ndarray]) -> float:
    """Mean absolute frame-to-frame change (0-255 units) of a face's crops (S, S, 3) uint8 over
    consecutive frames: what a viewer sees as flicker on a static scene."""
    if len(crops) < 2:
        return 0.0
    stack = np.stack(crops).astype(np.float64)
    return float(np.abs(np.diff(stack, axis=0)).mean())
