"""``Restorer``: detect -> align -> restore (batched) -> paste back, for whole photos or aligned
crops, with official GPEN weights, our exports or any network."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from gpen_lightning.ranges import to_signed, to_uint8, to_unit
from gpen_lightning.restore.align import resize, similarity_transform, warp_to
from gpen_lightning.restore.align import template as template_points
from gpen_lightning.restore.background import BG_UPSAMPLERS, make_bg_upsampler
from gpen_lightning.restore.detect import Face, FaceDetector, RetinaFaceDetector
from gpen_lightning.restore.graphs import GraphedNetwork
from gpen_lightning.restore.paste import composite, draw_faces, face_mask, hull_mask, smooth_small
from gpen_lightning.restore.tasks import Task, UnitRange, check_task_weights, task_crop, task_image
from gpen_lightning.runtime import resolve_device
from gpen_lightning.zoo.weights import load_restoration_model

__all__ = ["Detection", "Paste", "RestoredFace", "RestoreResult", "Restorer", "Task", "draw_faces"]

log = logging.getLogger(__name__)

Image = np.ndarray | torch.Tensor | str | os.PathLike


@dataclass
class RestoredFace:
    """A face of a restored photo: detection, the aligned input crop and its restoration
    (both (S, S, 3) uint8) and the image -> crop transform (2, 3)."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    crop: np.ndarray
    restored: np.ndarray
    matrix: np.ndarray


@dataclass
class RestoreResult:
    """``image``: the restored photo (H', W', 3) uint8; ``faces``: one entry per face."""

    image: np.ndarray
    faces: list[RestoredFace] = field(default_factory=list)


def _to_chw_uint8(image: Image) -> torch.Tensor:
    if isinstance(image, str | os.PathLike):
        from gpen_lightning.data.folder import read_rgb

        return read_rgb(image)
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, 2)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"expected an (H, W, 3) uint8 RGB array, got {image.dtype} {image.shape}"
            )
        return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(
            f"expected a (3, H, W) uint8 tensor, got {image.dtype} {tuple(image.shape)}"
        )
    return image


def _hwc(x: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return to_uint8(x).permute(1, 2, 0).cpu().numpy()


@dataclass(frozen=True, kw_only=True)
class Detection:
    """Which faces of a photo are restored, and the template they are aligned to.

    Args:
        detector: a ``FaceDetector``; default RetinaFace (offline) with ``score_threshold``.
        score_threshold: the default detector's confidence threshold.
        detector_weights: weights of the default RetinaFace (e.g. GPEN's ``RetinaFace-R50.pth``),
            run on the restorer's device; None: the bundled MobileNet-0.25.
        template: "ffhq" (FFHQ 512 template, default) or "gpen" (the official GPEN one).
        min_face_size: leave faces whose box's longer side is below this (px) untouched.
        only_center_face: restore only the face nearest the image centre (portraits).
    """

    detector: FaceDetector | None = None
    score_threshold: float = 0.9
    detector_weights: str | os.PathLike | None = None
    template: str = "ffhq"
    min_face_size: float = 0.0
    only_center_face: bool = False


@dataclass(frozen=True, kw_only=True)
class Paste:
    """How restored faces go back into the photo.

    Args:
        upscale: output scale of whole photos (the background by ``bg_upsampler``).
        alpha: blend of restored and original crop (1: restored only).
        paste_mask: "hull" (default: each face's own region from its landmarks, feathered by a
            tenth of the eye distance: ``hull_mask``; seams 0.34-0.44x the square's,
            ``benchmarks/seams.py``) or "template" (the official feathered square).
        mask: soft paste mask (1, 1, S, S) in [0, 1] for every face (a parsing-network mask can
            be plugged in); default: ``paste_mask``'s.
        small_face: restored faces whose box has a side shorter than this (px) are smoothed by
            the [1, 2, 1] / 4 binomial before blending, as the official pipeline (``smooth_small``).
        face_upscale: with ``upscale`` > 1, paste the faces at the output resolution; False
            pastes at the input's and resizes the whole composite.
        bg_upsampler: "bicubic" (default), "realesrgan" (an RRDBNet file, RealESRNet /
            Real-ESRGAN x2 or x4, in ``bg_weights``, as the official demo's ``--use_sr``;
            ``restore.background.RRDBUpsampler``) or a callable
            ``(image (3, H, W) float [0, 1], scale) -> (3, round(sH), round(sW))``.
        bg_weights: the RRDBNet file of "realesrgan".
        bg_tile: its tile side in input px (0: the whole photo at once).
        bg_tile_pad: the context read around each tile (px; official: 10).
        draw_boxes: draw each restored face's box and landmarks on the output (debugging).
    """

    upscale: float = 1.0
    alpha: float = 1.0
    paste_mask: str = "hull"
    mask: torch.Tensor | None = None
    small_face: float = 100.0
    face_upscale: bool = True
    bg_upsampler: str | Callable[[torch.Tensor, float], torch.Tensor] | None = "bicubic"
    bg_weights: str | os.PathLike | None = None
    bg_tile: int = 400
    bg_tile_pad: int = 10
    draw_boxes: bool = False

    def __post_init__(self) -> None:
        if self.paste_mask not in ("template", "hull"):
            raise ValueError(f"paste_mask={self.paste_mask!r}: choose template or hull")
        kind = self.bg_upsampler
        if isinstance(kind, str) and kind not in BG_UPSAMPLERS:
            raise ValueError(f"bg_upsampler={kind!r}: choose {' or '.join(BG_UPSAMPLERS)}")


class Restorer:
    """Restore the faces of photos.

    Args:
        weights: GPEN weights (path: official ``GPEN-BFR-*.pth``, our ``gpen.pt`` /
            ``gpen-official.pth`` or a ``stage=finetune`` ``.ckpt``; ``"latest"``: the newest
            ``stage=finetune`` export under ``runs_root``), or any ``nn.Module`` /
            callable mapping (B, 3, S, S) in [-1, 1] to the same (give ``size`` then).
        model: preset used with random weights when ``weights`` is None (benchmarks).
        size: crop size S (default: the network's).
        device: "cpu", "cuda", ... (default or "auto": cuda when available).
        bf16: run the network under bfloat16 autocast.
        cuda_graph: on CUDA, capture the network once for ``batch_size`` faces and replay it
            (smaller batches are padded): fewer kernel launches, the win at small batches.
        batch_size: faces per network call (across images in ``restore_many``).
        detection: which faces are restored (``Detection``).
        paste: how they are pasted back (``Paste``).
        task: what the network does (``Task``: restore, or the official demo's colorization,
            inpainting and seg2face on aligned faces, ``restore.tasks``).
    """

    def __init__(
        self,
        weights: str | os.PathLike | nn.Module | Callable | None = None,
        *,
        model: str | None = None,
        runs_root: str | os.PathLike = "outputs",
        size: int | None = None,
        device: str | torch.device | None = None,
        bf16: bool = False,
        cuda_graph: bool = False,
        batch_size: int = 8,
        detection: Detection = Detection(),
        paste: Paste = Paste(),
        task: Task | None = None,
    ) -> None:
        self.device = resolve_device(device)
        task = task or Task()
        check_task_weights(task.task, weights=weights, model=model if weights is None else None)
        if callable(weights) and not isinstance(weights, nn.Module):
            self.net = weights
        else:
            self.net = load_restoration_model(weights, model=model, runs_root=runs_root)
            self.net = self.net.to(self.device)
        if task.task == "seg2face":  # the official seg2face network works in [0, 1]
            self.net = UnitRange(self.net)
        self.size = size or getattr(self.net, "size", None)
        if not self.size:
            raise ValueError("give size=S for a network without a .size attribute")
        self.bf16, self.batch_size = bf16, batch_size
        self._graphed: GraphedNetwork | None = None
        if cuda_graph:
            self._graphed = GraphedNetwork(
                self.net, batch=batch_size, size=self.size, device=self.device, bf16=bf16
            )
        self.detection, self.paste = detection, paste
        self._detector = detection.detector
        self.points = template_points(detection.template, self.size)
        self.paste_mask = paste.paste_mask if paste.mask is None else "given"
        self.mask = face_mask(self.size) if paste.mask is None else paste.mask
        self.bg_upsampler = make_bg_upsampler(
            paste.bg_upsampler,
            weights=paste.bg_weights,
            tile=paste.bg_tile,
            tile_pad=paste.bg_tile_pad,
            device=self.device,
        )
        self.task, self._strokes = task, np.random.RandomState(task.inpaint_seed)

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = RetinaFaceDetector(
                weights=self.detection.detector_weights,
                device=self.device,
                score_threshold=self.detection.score_threshold,
            )
        return self._detector

    def detect(self, image: torch.Tensor) -> list[Face]:
        """The faces of ``image`` (3, H, W) uint8 that will be restored: the detector's, minus
        those under ``min_face_size``, and only the most central with ``only_center_face``."""
        found = self.detector(image.permute(1, 2, 0).numpy())
        faces = [f for f in found if f.size >= self.detection.min_face_size]
        if self.detection.only_center_face and len(faces) > 1:
            centre = np.array([image.shape[-1], image.shape[-2]]) / 2
            dist = [np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre) for f in faces]
            faces = [faces[int(np.argmin(dist))]]
        return faces

    # -- the network --------------------------------------------------------------------------
    def restore_faces(self, crops: torch.Tensor) -> torch.Tensor:
        """Aligned crops (B, 3, S, S) float in [-1, 1] -> restored, same shape, in batches
        (the network runs under ``torch.inference_mode``)."""
        out = []
        for chunk in crops.split(self.batch_size):
            chunk = chunk.to(self.device, torch.float32)
            if self._graphed is not None:
                out.append(self._graphed(chunk))
                continue
            with (
                torch.inference_mode(),
                torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16),
            ):
                y = self.net(chunk).float().clamp(-1, 1)
            out.append(y)
        # concatenated outside inference mode: an ordinary tensor the paste-back may modify
        return torch.cat(out) if out else crops.new_zeros(0, 3, self.size, self.size)

    # -- whole pipeline ------------------------------------------------------------------------
    def restore(self, image: Image, *, aligned: bool = False) -> RestoreResult:
        """Restore one photo (path, (H, W, 3) uint8 array or (3, H, W) uint8 tensor)."""
        return self.restore_many([image], aligned=aligned)[0]

    def restore_many(
        self,
        images: Sequence[Image],
        *,
        aligned: bool = False,
        faces: Sequence[Sequence[Face]] | None = None,
    ) -> list[RestoreResult]:
        """Restore several photos; the faces of all of them go through the network together.
        ``faces``: the faces to restore in each image (e.g. tracked ones) instead of detecting."""
        self.task.check(aligned=aligned)
        tensors = [_to_chw_uint8(im) for im in images]
        if not tensors:
            return []
        if aligned and self.task.task != "restore":
            return self._restore_task(tensors)
        if aligned:
            return self._restore_aligned(tensors)
        given = [None] * len(tensors) if faces is None else list(faces)
        if len(given) != len(tensors):
            raise ValueError(f"faces= has {len(given)} entries for {len(tensors)} images")
        plans = [self._plan(img, f) for img, f in zip(tensors, given)]
        crops = torch.cat([c for _, c, _ in plans])
        restored = self.restore_faces(crops) if len(crops) else crops
        outs = restored.split([len(c) for _, c, _ in plans])
        return [self._paste(img, f, c, o, m) for img, (f, c, m), o in zip(tensors, plans, outs)]

    def _restore_aligned(self, tensors: list[torch.Tensor]) -> list[RestoreResult]:
        """Aligned crops of any size: resized to S, restored, resized back."""
        s = (self.size, self.size)
        crops = torch.stack([resize(t.float(), s, mode="bilinear") for t in tensors])
        crops = to_signed(crops, 255)
        out = self._blend(self.restore_faces(crops), crops)
        return [
            self._whole(resize(to_unit(o), t.shape[-2:]), to_unit(c), o, t.shape[-2:])
            for t, c, o in zip(tensors, crops, out)
        ]

    def _restore_task(self, tensors: list[torch.Tensor]) -> list[RestoreResult]:
        """Aligned faces through a task's preprocessing (``restore.tasks``): colorization at the
        input's size, inpainting and seg2face at S."""
        fed, crops = zip(*(task_crop(self.task, t, self.size, self._strokes) for t in tensors))
        out = self.restore_faces(torch.stack(crops))
        return [
            self._whole(task_image(self.task, o, f), f.float() / 255, o, f.shape[-2:])
            for f, o in zip(fed, out)
        ]

    def upscaled(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) float in [0, 1] at ``upscale`` by ``bg_upsampler`` (unchanged at 1)."""
        s = self.paste.upscale
        if s == 1:
            return image
        size = (round(image.shape[-2] * s), round(image.shape[-1] * s))
        up = self.bg_upsampler
        return (resize(image, size) if up is None else up(image, s)).clamp(0, 1)

    def _whole(self, image, crop, restored, hw) -> RestoreResult:
        """The result of an aligned crop (h, w) = ``hw``: the image (at ``upscale``, as the
        official demo super-resolves aligned faces) and one face spanning it."""
        h, w = hw
        image = self.upscaled(image)
        face = RestoredFace(
            box=np.array([0, 0, image.shape[-1], image.shape[-2]], np.float32),
            landmarks=np.zeros((0, 2), np.float32),
            score=1.0,
            crop=_hwc(crop),
            restored=_hwc(to_unit(restored)),
            matrix=np.array([[self.size / w, 0, 0], [0, self.size / h, 0]]),
        )
        return RestoreResult(image=_hwc(image), faces=[face])

    def _plan(
        self, img: torch.Tensor, faces: Sequence[Face] | None = None
    ) -> tuple[list[Face], torch.Tensor, list[np.ndarray]]:
        """Detect (unless ``faces`` are given) and align: faces, crops (N, 3, S, S) in [-1, 1],
        matrices (image -> crop)."""
        faces = self.detect(img) if faces is None else list(faces)
        matrices = [similarity_transform(f.landmarks, self.points) for f in faces]
        if not faces:
            return faces, torch.zeros(0, 3, self.size, self.size), matrices
        m = torch.as_tensor(np.stack(matrices), dtype=torch.float32)
        crops = warp_to(to_signed(img.float(), 255), m, self.size)
        return faces, crops, matrices

    def _blend(self, restored: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
        alpha = self.paste.alpha
        if alpha >= 1:
            return restored
        return alpha * restored + (1 - alpha) * crops.to(restored)

    def _paste(self, img, faces, crops, restored, matrices) -> RestoreResult:
        """Paste the restored crops of ``faces`` into ``img`` (3, H, W) uint8 at ``upscale``."""
        bg = img.float() / 255
        if not faces:
            return RestoreResult(image=_hwc(self.upscaled(bg)))
        restored = self._blend(smooth_small(restored.cpu(), faces, self.paste.small_face), crops)
        masks = self.masks(faces, matrices)
        s = self.paste.upscale
        if self.paste.face_upscale:  # into the upscaled background
            scaled = [m * (1 / s, 1 / s, 1) for m in matrices]  # output pixels -> crop
            out = composite(self.upscaled(bg), to_unit(restored), scaled, masks)
        else:  # composite at 1x, then resize it all
            out = self.upscaled(composite(bg, to_unit(restored), matrices, masks))
        found = [
            RestoredFace(f.box * s, f.landmarks * s, f.score, _hwc(to_unit(c)), _hwc(to_unit(r)), m)
            for f, c, r, m in zip(faces, crops, restored, matrices)
        ]
        image = _hwc(out)
        if self.paste.draw_boxes:
            image = draw_faces(image, [f.box for f in found], [f.landmarks for f in found])
        return RestoreResult(image, found)

    def masks(self, faces: Sequence[Face], matrices: Sequence[np.ndarray]) -> torch.Tensor:
        """The paste masks of ``faces`` in their crops: (1 or N, 1, S, S)."""
        if self.paste_mask != "hull":
            return self.mask
        return torch.cat(
            [
                hull_mask(self.size, f.landmarks @ m[:, :2].T + m[:, 2])
                for f, m in zip(faces, matrices)
            ]
        )
