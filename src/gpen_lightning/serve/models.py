"""The networks the web app can use, loaded once and shared by every request: the weights files
of a folder (the model picker), ``latest`` and the configured default; one face detector for all
of them; per-request ``Restorer`` views that change the paste and detection options without
reloading anything."""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gpen_lightning.io import latest_file
from gpen_lightning.restore.background import BG_UPSAMPLERS, Upsampler, make_bg_upsampler
from gpen_lightning.restore.detect import RetinaFaceDetector
from gpen_lightning.restore.restorer import Detection, Paste, Restorer
from gpen_lightning.restore.tasks import TASKS, Task, weights_task
from gpen_lightning.runtime import resolve_device

__all__ = [
    "LATEST",
    "WEIGHT_SUFFIXES",
    "Models",
    "RequestOptions",
    "find_weights",
    "with_options",
]

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".ckpt")
LATEST = "latest"


def find_weights(folder: str | os.PathLike | None) -> list[Path]:
    """The weights files (``WEIGHT_SUFFIXES``) under ``folder``, recursively, sorted by path;
    none when ``folder`` is None or missing."""
    if not folder or not Path(folder).expanduser().is_dir():
        return []
    root = Path(folder).expanduser()
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


@dataclass(frozen=True, kw_only=True)
class RequestOptions:
    """What one request may change (the page's controls; the API's arguments after the file).

    Args:
        alpha: fidelity, restored * alpha + original * (1 - alpha).
        upscale: output scale of the photo.
        only_center_face: restore only the face nearest the centre.
        min_face_size: leave faces smaller than this (px, longer box side) untouched.
        bg_upsampler: background upsampler, "bicubic" or "realesrgan" (``Models.upsamplers``:
            realesrgan only on a server started with ``bg_weights``).
        paste_mask: "hull" or "template" (``Paste``).
        aligned: the upload is an aligned face crop (no detection, no paste-back).
        task: "restore", or the official demo's "colorization", "inpainting" (the face's
            holes painted white) or "seg2face" (a parsing map in): aligned crops only, with
            that task's weights (``restore.tasks``).
    """

    alpha: float = 1.0
    upscale: float = 1.0
    only_center_face: bool = False
    min_face_size: float = 0.0
    bg_upsampler: str = "bicubic"
    paste_mask: str = "hull"
    aligned: bool = False
    task: str = "restore"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}: choose one of {', '.join(TASKS)}")
        if self.task != "restore" and not self.aligned:
            raise ValueError(
                f"task={self.task} takes an aligned face crop, as the official demo: tick "
                "'Aligned face' and upload the crop"
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha={self.alpha}: fidelity must be between 0 and 1")
        if not 1.0 <= self.upscale <= 8.0:
            raise ValueError(f"upscale={self.upscale}: choose a scale between 1 and 8")
        if self.min_face_size < 0:
            raise ValueError(f"min_face_size={self.min_face_size} must be >= 0")
        if self.paste_mask not in ("hull", "template"):
            raise ValueError(f"paste_mask={self.paste_mask!r}: choose hull or template")
        if self.bg_upsampler not in BG_UPSAMPLERS:
            choices = " or ".join(BG_UPSAMPLERS)
            raise ValueError(f"bg_upsampler={self.bg_upsampler!r}: choose {choices}")


def with_options(
    base: Restorer, options: RequestOptions, *, upsampler: Upsampler | None = None
) -> Restorer:
    """A view of ``base`` with the request's paste and detection options and background
    ``upsampler`` (None: bicubic): a shallow copy that shares its network, detector and masks
    (nothing is loaded or recomputed)."""
    view = copy.copy(base)
    view.paste = replace(
        base.paste,
        alpha=options.alpha,
        upscale=options.upscale,
        paste_mask=options.paste_mask,
        bg_upsampler="bicubic" if upsampler is None else upsampler,
    )
    view.detection = replace(
        base.detection,
        min_face_size=options.min_face_size,
        only_center_face=options.only_center_face,
    )
    view.paste_mask = view.paste.paste_mask if view.paste.mask is None else "given"
    view.bg_upsampler = upsampler
    return view


class Models:
    """The weights the app offers and their loaded ``Restorer``s (one per choice, at most
    ``max_loaded`` kept, least recently used dropped), all sharing one face detector.

    Args:
        weights: the configured default (a path, ``latest`` or None).
        weights_dir: folder whose weights files the picker lists.
        model: preset whose random weights stand in when no weights exist anywhere.
        runs_root: where ``latest`` looks (``paths.log_dir``).
        device, bf16, batch_size: as ``Restorer``'s.
        template, score_threshold, detector_weights: as ``Detection``'s.
        bg_weights, bg_tile, bg_tile_pad: the RRDBNet file of the "realesrgan" background
            upsampler and its tiling (``Paste``'s); None: bicubic only.
        max_loaded: networks kept in memory at once.
    """

    def __init__(
        self,
        *,
        weights: str | None,
        weights_dir: str | None,
        model: str,
        runs_root: str | os.PathLike,
        device: str = "auto",
        bf16: bool = False,
        batch_size: int = 8,
        template: str = "ffhq",
        score_threshold: float = 0.9,
        detector_weights: str | None = None,
        bg_weights: str | None = None,
        bg_tile: int = 400,
        bg_tile_pad: int = 10,
        max_loaded: int = 2,
    ) -> None:
        self.model, self.runs_root = model, Path(runs_root)
        self.device = resolve_device(device)
        self.bf16, self.batch_size, self.max_loaded = bf16, batch_size, max_loaded
        self.detector = RetinaFaceDetector(
            weights=detector_weights, device=self.device, score_threshold=score_threshold
        )
        self.detection = Detection(detector=self.detector, template=template)
        self.upsamplers: dict[str, Upsampler | None] = {"bicubic": None}
        if bg_weights:
            self.upsamplers["realesrgan"] = make_bg_upsampler(
                "realesrgan",
                weights=bg_weights,
                tile=bg_tile,
                tile_pad=bg_tile_pad,
                device=self.device,
            )
        self.files = find_weights(weights_dir)
        self.default = self._default(weights)
        self._loaded: OrderedDict[tuple[str, str], Restorer] = OrderedDict()
        self._lock = threading.Lock()

    def _default(self, weights: str | None) -> str | None:
        """The configured weights, else ``latest`` when a finetune export exists, else the first
        file of ``weights_dir``, else None (random weights of ``model``)."""
        if weights:
            return str(weights)
        if latest_file(self.runs_root, "finetune", "gpen.pt") is not None:
            return LATEST
        return str(self.files[0]) if self.files else None

    @property
    def random(self) -> bool:
        """True when the default network has random weights (no weights anywhere)."""
        return self.default is None

    def choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs for the model picker; the default first."""
        others = [value for value in [LATEST, *map(str, self.files)] if value != self.default]
        return [(self.label(w), self.key(w)) for w in [self.default, *others]]

    def key(self, weights: str | None) -> str:
        """The picker's value of ``weights`` (None: ``random:<model>``)."""
        return weights if weights is not None else f"random:{self.model}"

    def label(self, weights: str | None) -> str:
        """What the picker shows for ``weights``."""
        if weights is None:
            return f"random weights of {self.model} (no trained weights found)"
        if weights == LATEST:
            return "weights=latest (newest stage=finetune export)"
        return Path(weights).name

    def get(self, choice: str | None = None, task: str = "restore") -> Restorer:
        """The loaded ``Restorer`` of a picker value (default: the default) for ``task``,
        loading it once."""
        key = choice or self.key(self.default)
        with self._lock:
            if (key, task) in self._loaded:
                self._loaded.move_to_end((key, task))
                return self._loaded[key, task]
            restorer = self._load(key, task)
            self._loaded[key, task] = restorer
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
            return restorer

    def _load(self, key: str, task: str) -> Restorer:
        allowed = {self.key(self.default), LATEST, *map(str, self.files)}
        if key not in allowed:
            raise ValueError(f"model {key!r} is not offered; choose one of {sorted(allowed)}")
        weights = None if key.startswith("random:") else key
        log.info("loading %s", self.label(weights))
        return Restorer(
            weights,
            model=self.model,
            runs_root=self.runs_root,
            device=self.device,
            bf16=self.bf16,
            batch_size=self.batch_size,
            detection=self.detection,
            paste=Paste(),
            task=Task(task=task),
        )

    def view(self, choice: str | None, options: RequestOptions) -> Restorer:
        """The restorer of one request: the picked network (``get``) with ``options`` and their
        background upsampler (``with_options``)."""
        if options.bg_upsampler not in self.upsamplers:
            raise ValueError(
                f"bg_upsampler={options.bg_upsampler} is not available on this server: start it "
                "with bg_weights=PATH (a RealESRNet / Real-ESRGAN RRDBNet file)"
            )
        upsampler = self.upsamplers[options.bg_upsampler]
        return with_options(self.get(choice, options.task), options, upsampler=upsampler)

    def warm_up(self) -> None:
        """Load the default network and the detector's session now, once, before any request
        (concurrent first requests would otherwise each start loading them)."""
        self.get()
        self.detector(np.zeros((64, 64, 3), np.uint8))

    def describe(self, choice: str | None = None) -> str:
        """What the picker's ``choice`` is: its weights and the face size its network restores
        (loading it if needed)."""
        key = choice or self.key(self.default)
        weights = None if key.startswith("random:") else key
        task = weights_task(weights or self.model)
        size = self.get(key, task).size
        does = "restores" if task == "restore" else f"task={task} on"
        return f"**{self.label(weights)}**: {does} {size} px faces (aligned {size}x{size} crops)."
