"""The batch runner of the restore stage, shared by the single-process path (``restore.stage``)
and the Lightning predict runner (``restore.distributed``): the inputs a spec names, what to do
with each file (``RunOptions``), and ``RestoreRun``, which reads, restores and writes files and
accounts for each in a ``Report``."""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from gpen_lightning.data.folder import IMAGE_EXTENSIONS, header_size, read_rgb, sniff
from gpen_lightning.io import atomic_write
from gpen_lightning.restore.restorer import Restorer
from gpen_lightning.restore.video import VIDEO_EXTENSIONS, VideoError, restore_video

__all__ = [
    "Pending",
    "Report",
    "RestoreRun",
    "RunOptions",
    "collect_inputs",
    "refuse_output_in_inputs",
]


@dataclass
class Report:
    images: int = 0
    videos: int = 0
    frames: int = 0  # video frames written
    faces: int = 0
    no_face: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason

    def merge(self, other: Report) -> Report:
        """The sum of two reports (one per process)."""
        return Report(
            self.images + other.images,
            self.videos + other.videos,
            self.frames + other.frames,
            self.faces + other.faces,
            sorted(self.no_face + other.no_face),
            dict(sorted({**self.skipped, **other.skipped}.items())),
            dict(sorted({**self.failed, **other.failed}.items())),
        )

    def summary(self) -> str:
        what = f"{self.images} image(s)"
        if self.videos:
            what += f", {self.videos} video(s) ({self.frames} frames)"
        lines = [f"Restored {what}, {self.faces} face(s)."]
        if self.no_face:
            lines.append(f"  no face found in {len(self.no_face)}: {', '.join(self.no_face[:5])}")
        for title, entries in (("skipped", self.skipped), ("failed", self.failed)):
            if entries:
                lines.append(f"  {title} {len(entries)}:")
                lines += [f"    {p}: {why}" for p, why in entries.items()]
        return "\n".join(lines)


def collect_inputs(spec: str) -> tuple[list[Path], Path]:
    """Files of ``spec`` (a file, a folder searched recursively, or a glob) and the root their
    output paths are made relative to."""
    if any(c in spec for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        root = Path(os.path.commonpath([p.parent for p in files])) if files else Path(".")
        return files, root
    path = Path(spec).expanduser()
    if path.is_file():
        return [path], path.parent
    if path.is_dir():
        wanted = set(IMAGE_EXTENSIONS) | VIDEO_EXTENSIONS
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
        return files, path
    raise FileNotFoundError(f"input={spec} is not a file, a folder or a glob that matches files")


def _read(path: Path, max_pixels: int) -> torch.Tensor:
    """``read_rgb`` of an image whose file header looks like an image's and claims at most
    ``max_pixels`` (``ValueError`` before decoding otherwise)."""
    if (why := sniff(path)) is not None:
        raise ValueError(why)
    try:
        w, h = header_size(path)
    except Exception:  # not readable by Pillow: the decoder will report it
        w = h = 0
    if w * h > max_pixels:
        raise ValueError(
            f"image header claims {w}x{h} = {w * h / 1e6:.0f} MP, over max_pixels="
            f"{max_pixels / 1e6:.0f} MP (raise max_pixels to process it)"
        )
    return read_rgb(path)


def _save(array: np.ndarray, path: Path) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _side_by_side(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    h, w = after.shape[:2]
    if before.shape[:2] != (h, w):
        before = np.asarray(Image.fromarray(before).resize((w, h), Image.BICUBIC))
    return np.concatenate([before, after], axis=1)


def refuse_output_in_inputs(out_dir: Path, files: list[Path], root: Path, suffix: str) -> None:
    in_dirs = {p.parent.resolve() for p in files} | ({root.resolve()} if root.is_dir() else set())
    if not suffix and out_dir.resolve() in in_dirs:
        raise ValueError(
            f"output={out_dir} is an input folder: restored images could replace the inputs. "
            "Choose another output folder or set a filename suffix (suffix=_restored)."
        )


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What ``RestoreRun`` does with each file (the restore stage's options of the same names)."""

    aligned: bool  # inputs are aligned face crops (no detection, no paste-back)
    suffix: str  # added to output file names
    overwrite: bool  # replace existing outputs (else: skipped and reported)
    save_faces: bool  # also write faces/<name>_<i>.png: aligned input | restored
    compare: bool  # also write compare/<name>.png: input | restored
    max_pixels: int  # refuse images whose header claims more pixels
    images_per_batch: int  # images restored together (their faces share network calls)
    frames_per_batch: int  # videos: frames whose faces share network calls
    smooth: bool  # videos: track faces and smooth their landmarks
    crf: int  # videos: encoder quality


@dataclass
class Pending:
    path: Path  # the input file
    rel: Path  # its path relative to the input root
    target: Path  # the restored image's output path
    image: torch.Tensor  # (3, H, W) uint8


class RestoreRun:
    """Restore files and account for every one in a ``Report``: images are read (``take``),
    restored in groups whose faces share network batches (``restore``) and written (``write``);
    a video is restored frame by frame as soon as it is met (``video``). ``run`` does it all in
    this process; ``restore.distributed`` calls the same steps from Lightning's predict loop,
    with a ``restorer`` set on each process (None until then)."""

    def __init__(
        self,
        options: RunOptions,
        restorer: Restorer | None,
        files: list[Path],
        root: Path,
        out_dir: Path,
    ) -> None:
        self.options, self.restorer, self.files = options, restorer, files
        self.root, self.out_dir = root, out_dir
        self.suffix = options.suffix or ""
        self.inputs = {p.resolve() for p in files}
        self.report = Report()
        self.show_progress = True

    def run(self) -> Report:
        progress = tqdm(
            self.files, desc="restore", unit="file", file=sys.stdout, dynamic_ncols=True
        )
        pending: list[Pending] = []
        for path in progress:
            if (item := self.take(path)) is not None:
                pending.append(item)
            if len(pending) >= self.options.images_per_batch:
                self.write_all(pending, self.restore(pending))
                pending = []
            progress.set_postfix(faces=self.report.faces, failed=len(self.report.failed))
        self.write_all(pending, self.restore(pending))
        progress.close()
        return self.report

    def _target(self, path: Path) -> tuple[Path, Path] | None:
        """(relative path, output path) of ``path``, or None (recorded as skipped)."""
        rel = path.relative_to(self.root) if path.is_relative_to(self.root) else Path(path.name)
        ext = path.suffix if path.suffix.lower() in VIDEO_EXTENSIONS else ".png"
        target = self.out_dir / rel.parent / f"{rel.stem}{self.suffix}{ext}"
        if target.resolve() in self.inputs:
            self.report.skipped[str(path)] = "its output would overwrite an input (set a suffix)"
        elif target.exists() and not self.options.overwrite:
            self.report.skipped[str(path)] = f"{target} exists (overwrite=true replaces it)"
        else:
            return rel, target
        return None

    def take(self, path: Path) -> Pending | None:
        """A video is restored now (None); an image is read for ``restore`` unless its output
        must not be written or it cannot be read (then None)."""
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            self.video(path)
            return None
        if (where := self._target(path)) is None:
            return None
        try:
            image = _read(path, self.options.max_pixels)
        except (ValueError, OSError) as err:
            self.report.failed[str(path)] = str(err).splitlines()[0]
            return None
        return Pending(path, *where, image)

    def restore(self, pending: list[Pending]) -> list:
        """Restore the images together; when that fails, one by one to name the culprit."""
        if not pending:
            return []
        aligned = self.options.aligned
        try:
            return self.restorer.restore_many([p.image for p in pending], aligned=aligned)
        except (ValueError, OSError, RuntimeError):
            results = []
            for item in pending:
                try:
                    results.append(self.restorer.restore(item.image, aligned=aligned))
                except (ValueError, OSError, RuntimeError) as err:
                    self.report.failed[str(item.path)] = str(err).splitlines()[0]
                    results.append(None)
            return results

    def write_all(self, pending: list[Pending], results: list) -> None:
        for item, result in zip(pending, results):
            if result is not None:
                self.write(item, result)

    def write(self, item: Pending, result) -> None:
        _save(result.image, item.target)
        self.report.images += 1
        self.report.faces += len(result.faces)
        if not result.faces:
            self.report.no_face.append(str(item.path))
        rel = item.rel
        if self.options.save_faces:
            for i, face in enumerate(result.faces):
                pair = np.concatenate([face.crop, face.restored], axis=1)
                name = f"{rel.stem}{self.suffix}_{i:02d}.png"
                _save(pair, self.out_dir / "faces" / rel.parent / name)
        if self.options.compare:
            before = item.image.permute(1, 2, 0).numpy()
            compare = self.out_dir / "compare" / rel.parent / item.target.name
            _save(_side_by_side(before, result.image), compare)

    def video(self, path: Path) -> None:
        """Restore the video ``path`` into its output (a truncated one up to where it breaks)."""
        if (where := self._target(path)) is None:
            return
        if self.options.aligned:
            self.report.failed[str(path)] = "aligned=true takes face crops, not videos"
            return
        try:
            result = restore_video(
                self.restorer,
                path,
                where[1],
                frames_per_batch=self.options.frames_per_batch,
                smooth=self.options.smooth,
                crf=self.options.crf,
                progress=self.show_progress,
            )
        except VideoError as err:
            self.report.failed[str(path)] = str(err).splitlines()[0]
            return
        self.report.videos += 1
        self.report.frames += result.frames
        self.report.faces += result.faces
        if result.faces == 0:
            self.report.no_face.append(str(path))
        if result.error:
            self.report.failed[str(path)] = f"{result.error} ({result.frames} frames kept)"
