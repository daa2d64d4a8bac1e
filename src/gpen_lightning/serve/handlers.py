"""The web app's requests as plain functions (the page and the HTTP API call them; so do the
tests): read and check an upload, restore it with the shared network, write the results into a
per-request folder of the app's own output folder. Bad input raises ``RequestError`` with a
message for the page; the folder of a failed request is removed."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from gpen_lightning.data.folder import header_size, read_rgb, sniff
from gpen_lightning.restore.restorer import RestoreResult
from gpen_lightning.restore.video import VIDEO_EXTENSIONS, VideoError, probe, restore_video
from gpen_lightning.serve.models import Models, RequestOptions

__all__ = [
    "PhotoResult",
    "RequestError",
    "VideoResult",
    "Workspace",
    "face_size_warning",
    "read_image",
    "restore_clip",
    "restore_photo",
]

# faces this many times larger than the network's crop lose most of their detail to it
FACE_SIZE_RATIO = 2.0


class RequestError(ValueError):
    """An upload the app cannot restore; the message says what is wrong and what to do."""


def _readable(err: Exception, path: Path) -> str:
    """An error's message for the page: the upload's own name, not the server's path to it, and
    no errno codes."""
    return re.sub(r"\[Errno -?\d+\] ", "", str(err).replace(str(path), path.name))


class Workspace:
    """Per-request result folders ``root/<n>``; only the ``keep`` newest are kept.

    Args:
        root: the app's results folder (created).
        keep: result folders kept (older ones are deleted when a new one is made).
    """

    def __init__(self, root: str | Path, *, keep: int = 32) -> None:
        self.root, self.keep = Path(root), max(1, keep)
        self.root.mkdir(parents=True, exist_ok=True)

    def new(self) -> Path:
        """A fresh empty folder for one request (named by time; never an existing one)."""
        folder = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=self.root))
        done = sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.name)
        for old in done[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return folder


def read_image(path: str | Path | None, *, max_pixels: int, upscale: float = 1.0) -> np.ndarray:
    """An uploaded photo as (H, W, 3) uint8 RGB; ``RequestError`` for no file, a non-image, a
    header claiming more than ``max_pixels`` (input, or output at ``upscale``) and a file that
    does not decode (truncated, corrupt)."""
    if path is None or not Path(path).is_file():
        raise RequestError("No photo: upload or paste an image first.")
    path = Path(path)
    why = sniff(path)
    if why is not None:
        raise RequestError(f"{path.name}: {why}. Upload a JPEG, PNG, WebP, BMP or TIFF photo.")
    try:
        w, h = header_size(path)  # our own limit below
    except Exception as err:
        raise RequestError(f"{path.name}: not a readable image ({err}).") from None
    for what, pixels in (("the photo", w * h), ("the output", w * h * upscale**2)):
        if pixels > max_pixels:
            raise RequestError(
                f"{path.name}: {what} would be {pixels / 1e6:.0f} MP ({w}x{h} x upscale "
                f"{upscale:g}), over this server's limit of {max_pixels / 1e6:.0f} MP. Use a "
                "smaller photo or upscale (the limit is the server's max_pixels)."
            )
    try:
        return read_rgb(path).permute(1, 2, 0).numpy()
    except ValueError as err:
        raise RequestError(f"{_readable(err, path)} (truncated or corrupt file?)") from None


def face_size_warning(result: RestoreResult, *, size: int, upscale: float) -> str | None:
    """A warning when the photo's faces (median box side, input px) are more than
    ``FACE_SIZE_RATIO`` times the network's face size ``size``: it restores them at ``size`` px
    and the paste-back blurs them. None when they fit."""
    if not result.faces:
        return None
    sides = [max(f.box[2] - f.box[0], f.box[3] - f.box[1]) / upscale for f in result.faces]
    face = float(np.median(sides))
    if face <= FACE_SIZE_RATIO * size:
        return None
    return (
        f"The faces here are about {face:.0f} px but this network restores {size} px faces: "
        f"they come back with {size} px detail, blurred. Pick a network with a larger face size."
    )


@dataclass
class PhotoResult:
    """One restored photo: ``before`` (the input resized to the output) and ``after`` (H, W, 3)
    uint8, ``image`` its PNG, ``faces`` (input | restored, caption) per face, ``archive`` a zip
    of the faces' PNGs, ``notes`` what the page shows under the result."""

    before: np.ndarray
    after: np.ndarray
    image: Path
    faces: list[tuple[np.ndarray, str]] = field(default_factory=list)
    archive: Path | None = None
    notes: list[str] = field(default_factory=list)


def _save_png(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path, format="PNG")
    return path


def _faces(result: RestoreResult, folder: Path) -> tuple[list[tuple[np.ndarray, str]], Path]:
    """The gallery's (input | restored, caption) pairs and a zip of them as PNGs."""
    pairs, archive = [], folder / "faces.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, face in enumerate(result.faces):
            size = face.crop.shape[1::-1]  # a task's output may be at the network's size
            restored = np.asarray(Image.fromarray(face.restored).resize(size, Image.BICUBIC))
            pair = np.concatenate([face.crop, restored], axis=1)  # (S, 2S, 3)
            pairs.append((pair, f"face {i}: input | restored (score {face.score:.2f})"))
            zf.write(_save_png(pair, folder / f"face_{i:02d}.png"), f"face_{i:02d}.png")
    return pairs, archive


def restore_photo(
    models: Models,
    path: str | Path | None,
    *,
    options: RequestOptions,
    choice: str | None,
    workspace: Workspace,
    max_pixels: int,
) -> PhotoResult:
    """Restore the faces of one uploaded photo with the picked network (``choice``, a
    ``Models.choices()`` value; None: the default) and ``options``. Raises ``RequestError``."""
    image = read_image(path, max_pixels=max_pixels, upscale=options.upscale)
    restorer = models.view(choice, options)
    result = restorer.restore(image, aligned=options.aligned)
    if not result.faces:
        least = f" and min_face_size={options.min_face_size:g} px" if options.min_face_size else ""
        raise RequestError(
            "No face found in this photo: nothing to restore. Faces need to be at least about "
            f"16 px wide, detected with confidence {models.detector.score_threshold:g}{least}."
        )
    folder = workspace.new()
    try:
        stem = Path(path).stem
        out = _save_png(result.image, folder / f"{stem}_restored.png")
        h, w = result.image.shape[:2]
        before = np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC))
        faces, archive = _faces(result, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    notes = [
        f"{len(result.faces)} face(s) restored by a {restorer.size} px network; {w}x{h} px out."
    ]
    if models.random:
        notes.insert(0, RANDOM_NOTE)
    warning = face_size_warning(result, size=restorer.size, upscale=options.upscale)
    notes += [warning] if warning else []
    return PhotoResult(before, result.image, out, faces, archive, notes)


RANDOM_NOTE = (
    "No trained weights were found: this network has RANDOM weights and its faces are noise. "
    "Start the app with weights=PATH (a GPEN .pth, gpen.pt or .ckpt), weights=latest or "
    "weights_dir=FOLDER."
)


@dataclass
class VideoResult:
    """A restored clip: ``video`` its path, ``notes`` what the page shows."""

    video: Path
    notes: list[str] = field(default_factory=list)


def restore_clip(
    models: Models,
    path: str | Path | None,
    *,
    options: RequestOptions,
    choice: str | None,
    workspace: Workspace,
    max_pixels: int,
    frames_per_batch: int = 8,
    crf: int = 18,
) -> VideoResult:
    """Restore every frame's faces of an uploaded clip (same fps, frame count, audio). Raises
    ``RequestError`` for no file, an unknown extension, an unreadable or oversized video."""
    if path is None or not Path(path).is_file():
        raise RequestError("No video: upload a clip first.")
    path = Path(path)
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        kinds = " ".join(sorted(VIDEO_EXTENSIONS))
        raise RequestError(f"{path.name}: not a video file name; upload one of {kinds}.")
    try:
        info = probe(path)
    except VideoError as err:
        raise RequestError(_readable(err, path)) from None
    if info.width * info.height * options.upscale**2 > max_pixels:
        raise RequestError(
            f"{path.name}: frames of {info.width}x{info.height} x upscale "
            f"{options.upscale:g} are over this server's max_pixels."
        )
    restorer = models.view(choice, options)
    folder = workspace.new()
    dst = folder / f"{path.stem}_restored{path.suffix.lower()}"
    try:
        report = restore_video(restorer, path, dst, frames_per_batch=frames_per_batch, crf=crf)
    except BaseException as err:
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(err, VideoError | ValueError):
            raise RequestError(_readable(err, path)) from None
        raise
    notes = [f"{report.frames} frames, {report.faces} face(s) restored in all."]
    if report.copied:
        notes.append("No face in any frame: the clip is returned unchanged.")
    if report.error:
        notes.append(f"Decoding stopped early: {report.error}; the frames before it are restored.")
    if models.random:
        notes.insert(0, RANDOM_NOTE)
    return VideoResult(dst, notes)
