"""``FaceFolder``: every image under a folder, decoded to uint8 RGB at the model size."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps
from torch.utils.data import Dataset

__all__ = ["IMAGE_EXTENSIONS", "FaceFolder", "read_rgb", "to_square"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM")  # JPEG, PNG, BMP; WebP: RIFF....WEBP


def sniff(path: Path) -> str | None:
    """Why a file cannot be an image (empty, unknown header), or None if its header looks fine."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if not head:
        return "empty file"
    if head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    return "not an image (unknown file header)"


def header_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) as the image file's header claims, without decoding the pixels and without
    Pillow's own pixel limit (the caller applies its own). Raises what Pillow raises for a file it
    cannot open."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as im:
            return im.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def read_rgb(path: str | os.PathLike[str]) -> torch.Tensor:
    """Decode any supported image to (3, H, W) uint8 RGB with Pillow, EXIF orientation applied.

    Gray, gray+alpha, palette, RGBA (alpha dropped), 16-bit and CMYK inputs are converted.
    Raises ``ValueError`` if the file cannot be decoded.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode once; the EXIF of a PNG may follow its pixels
            ImageOps.exif_transpose(im, in_place=True)
            if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit gray -> 8-bit
                im = im.point(lambda v: v / 257).convert("L")
            if im.mode != "RGB":
                im = im.convert("RGB")
            img = torch.from_numpy(np.array(im)).permute(2, 0, 1)  # (3, H, W) view of HWC
    except Exception as err:  # Pillow raises many exception types
        raise ValueError(f"cannot decode {path}: {err}") from None
    if img.shape[-1] < 2 or img.shape[-2] < 2:
        raise ValueError(f"{path} is {img.shape[-1]}x{img.shape[-2]} px, too small for a face")
    return img


def to_square(img: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop to a square, resize (antialiased) to ``size``: (3, H, W) -> (3, size, size)."""
    h, w = img.shape[-2:]
    if h != w:
        img = TF.center_crop(img, [min(h, w)])
    if img.shape[-1] != size:
        img = TF.resize(img, [size, size], antialias=True)
    return img


class FaceFolder(Dataset):
    """Every image under ``root`` (recursive; jpg, jpeg, png, webp, bmp) as uint8 (3, S, S).

    Args:
        root: folder of aligned faces.
        size: model size S (square crops are resized to it).
        flip: random horizontal flip with probability 0.5.
        verify: fully decode every file at construction, so that corrupt files are reported then
            (otherwise only empty and non-image files are; a corrupt one is reported when first
            read and replaced by the next good image).

    Items are dicts ``{"hq": uint8 (3, S, S), "index": int}``. ``skipped`` lists (path, reason).
    """

    def __init__(
        self, root: str | os.PathLike[str], *, size: int, flip: bool = True, verify: bool = False
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"face folder not found: {self.root} (set data.root)")
        files = sorted(
            p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        if not files:
            raise FileNotFoundError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {self.root}"
            )
        self.size, self.flip = size, flip
        self.skipped: list[tuple[Path, str]] = []
        self.files: list[Path] = []
        for f in files:
            reason = sniff(f)
            if reason is None and verify:
                try:
                    read_rgb(f)
                except ValueError as err:
                    reason = str(err)
            if reason is None:
                self.files.append(f)
            else:
                self._skip(f, reason)
        if not self.files:
            raise FileNotFoundError(f"none of the {len(files)} files under {self.root} is readable")
        if self.skipped:
            warnings.warn(
                f"{len(self.skipped)} of {len(files)} files under {self.root} skipped",
                stacklevel=2,
            )

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append((path, reason))
        warnings.warn(f"skipping {path}: {reason}", stacklevel=3)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self.files)):
            i = (index + attempt) % len(self.files)
            try:
                img = read_rgb(self.files[i])
                break
            except ValueError as err:
                if all(p != self.files[i] for p, _ in self.skipped):
                    self._skip(self.files[i], str(err))
        else:
            raise RuntimeError(f"no readable image left under {self.root}")
        img = to_square(img, self.size)
        if self.flip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return {"hq": img.contiguous(), "index": index}
