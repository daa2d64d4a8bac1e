"""``python -m gpen_lightning stage=restore input=PATH output=DIR weights=PATH``: restore every
image of a file, folder (recursive) or glob; never overwrite inputs; report what was skipped."""

from __future__ import annotations

import glob
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from gpen_lightning.data.folder import IMAGE_EXTENSIONS, read_rgb, sniff
from gpen_lightning.io import atomic_write
from gpen_lightning.restore.restorer import Restorer

__all__ = ["Report", "collect_inputs", "restore_files"]

log = logging.getLogger(__name__)


@dataclass
class Report:
    images: int = 0
    faces: int = 0
    no_face: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason

    def summary(self) -> str:
        lines = [f"Restored {self.images} image(s), {self.faces} face(s)."]
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
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        return files, path
    raise FileNotFoundError(f"input={spec} is not a file, a folder or a glob that matches files")


def _check_dims(path: Path, max_pixels: int) -> None:
    """Refuse images whose header claims more than ``max_pixels`` before decoding them."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # we apply our own limit
    try:
        with Image.open(path) as im:  # reads the header only
            w, h = im.size
    except Exception:  # not readable by Pillow: the decoder will report it
        return
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if w * h > max_pixels:
        raise ValueError(
            f"image header claims {w}x{h} = {w * h / 1e6:.0f} MP, over max_pixels="
            f"{max_pixels / 1e6:.0f} MP (raise max_pixels to process it)"
        )


def _read(path: Path, max_pixels: int):
    why = sniff(path)
    if why is not None:
        raise ValueError(why)
    _check_dims(path, max_pixels)
    return read_rgb(path)


def _save(array: np.ndarray, path: Path) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _side_by_side(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    h, w = after.shape[:2]
    if before.shape[:2] != (h, w):
        before = np.asarray(Image.fromarray(before).resize((w, h), Image.BICUBIC))
    return np.concatenate([before, after], axis=1)


def restore_files(cfg: DictConfig) -> int:
    """Run the restore stage; return the exit status (0: every file restored, 1: some failed)."""
    files, root = collect_inputs(str(cfg.input))
    out_dir = Path(cfg.output or cfg.paths.output_dir).expanduser()
    _refuse_output_in_inputs(out_dir, files, root, cfg.suffix or "")
    if not files:
        print(f"No images found under {cfg.input}.")
        return 1
    run = _RestoreRun(cfg, _make_restorer(cfg), files, root, out_dir)
    report = run.run()
    print(report.summary())
    print(f"Outputs in {out_dir}")
    return 1 if report.failed else 0


def _refuse_output_in_inputs(out_dir: Path, files: list[Path], root: Path, suffix: str) -> None:
    in_dirs = {p.parent.resolve() for p in files} | ({root.resolve()} if root.is_dir() else set())
    if not suffix and out_dir.resolve() in in_dirs:
        raise ValueError(
            f"output={out_dir} is an input folder: restored images could replace the inputs. "
            "Choose another output folder or set a filename suffix (suffix=_restored)."
        )


def _make_restorer(cfg: DictConfig) -> Restorer:
    return Restorer(
        cfg.weights,
        model=cfg.model.name,
        runs_root=cfg.paths.log_dir,
        device=None if cfg.device == "auto" else cfg.device,
        bf16=cfg.bf16,
        cuda_graph=cfg.get("cuda_graph", False),
        score_threshold=cfg.score_threshold,
        detector_weights=cfg.detector_weights,
        template=cfg.template,
        batch_size=cfg.batch_size,
        upscale=cfg.upscale,
        alpha=cfg.alpha,
    )


@dataclass
class _Pending:
    path: Path  # the input file
    rel: Path  # its path relative to the input root
    target: Path  # the restored image's output path
    image: torch.Tensor  # (3, H, W) uint8


class _RestoreRun:
    """One pass over the input files: read, restore in groups of ``images_per_batch`` (their faces
    share network batches), write the outputs, and account for every file in a ``Report``."""

    def __init__(
        self, cfg: DictConfig, restorer: Restorer, files: list[Path], root: Path, out_dir: Path
    ) -> None:
        self.cfg, self.restorer, self.files = cfg, restorer, files
        self.root, self.out_dir = root, out_dir
        self.suffix = cfg.suffix or ""
        self.inputs = {p.resolve() for p in files}
        self.report = Report()
        self.pending: list[_Pending] = []

    def run(self) -> Report:
        progress = tqdm(self.files, desc="restore", unit="img", file=sys.stdout, dynamic_ncols=True)
        for path in progress:
            self._queue(path)
            if len(self.pending) >= self.cfg.images_per_batch:
                self._flush()
                progress.set_postfix(faces=self.report.faces, failed=len(self.report.failed))
        self._flush()
        progress.close()
        return self.report

    def _queue(self, path: Path) -> None:
        """Read ``path`` into the pending group unless its output must not be written."""
        rel = path.relative_to(self.root) if path.is_relative_to(self.root) else Path(path.name)
        target = self.out_dir / rel.parent / f"{rel.stem}{self.suffix}.png"
        if target.resolve() in self.inputs:
            self.report.skipped[str(path)] = "its output would overwrite an input (set a suffix)"
        elif target.exists() and not self.cfg.overwrite:
            self.report.skipped[str(path)] = f"{target} exists (overwrite=true replaces it)"
        else:
            try:
                image = _read(path, int(self.cfg.max_pixels))
            except (ValueError, OSError) as err:
                self.report.failed[str(path)] = str(err).splitlines()[0]
                return
            self.pending.append(_Pending(path, rel, target, image))

    def _flush(self) -> None:
        """Restore the pending images together; when that fails, one by one to name the culprit."""
        if not self.pending:
            return
        aligned = self.cfg.aligned
        try:
            results = self.restorer.restore_many([p.image for p in self.pending], aligned=aligned)
        except (ValueError, OSError, RuntimeError):
            results = []
            for item in self.pending:
                try:
                    results.append(self.restorer.restore(item.image, aligned=aligned))
                except (ValueError, OSError, RuntimeError) as err:
                    self.report.failed[str(item.path)] = str(err).splitlines()[0]
                    results.append(None)
        for item, result in zip(self.pending, results):
            if result is not None:
                self._write(item, result)
        self.pending.clear()

    def _write(self, item: _Pending, result) -> None:
        _save(result.image, item.target)
        self.report.images += 1
        self.report.faces += len(result.faces)
        if not result.faces:
            self.report.no_face.append(str(item.path))
        rel = item.rel
        if self.cfg.save_faces:
            for i, face in enumerate(result.faces):
                pair = np.concatenate([face.crop, face.restored], axis=1)
                name = f"{rel.stem}{self.suffix}_{i:02d}.png"
                _save(pair, self.out_dir / "faces" / rel.parent / name)
        if self.cfg.compare:
            before = item.image.permute(1, 2, 0).numpy()
            compare = self.out_dir / "compare" / rel.parent / item.target.name
            _save(_side_by_side(before, result.image), compare)
