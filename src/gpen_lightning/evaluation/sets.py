"""The image sets of ``stage=evaluate``'s protocols: folders matched by file name (the relative
path without its extension, so ``a/001.png`` in HQ pairs ``a/001.jpg`` in LQ), each folder's
images of one size, read as uint8 without resizing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from gpen_lightning.data.folder import IMAGE_EXTENSIONS, read_rgb

__all__ = ["FolderSet", "WithRestored", "file_digest", "image_files", "match_files", "one_size"]


def image_files(root: str | os.PathLike[str]) -> dict[str, Path]:
    """``{name: path}`` of every image under ``root`` (recursive), ``name`` its relative path
    without extension, in sorted order. Two files with one name (``a.png``, ``a.jpg``) are an
    error."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        name = path.relative_to(root).with_suffix("").as_posix()
        if name in files:
            raise ValueError(f"{files[name]} and {path} have the same name: keep one of them")
        files[name] = path
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    return files


def _listing(names: list[str], limit: int = 10) -> str:
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def match_files(
    names: list[str], folders: dict[str, dict[str, Path]], *, reference: str
) -> dict[str, list[Path]]:
    """Each folder's files in the order of ``names`` (the ``reference`` folder's). Names missing
    from a folder, or a folder's names missing from the reference, raise ``ValueError`` listing
    them."""
    problems = []
    for label, files in folders.items():
        missing = [n for n in names if n not in files]
        extra = sorted(set(files) - set(names))
        if missing:
            problems.append(
                f"{len(missing)} {reference} image(s) have no {label} image: {_listing(missing)}"
            )
        if extra:
            problems.append(
                f"{len(extra)} {label} image(s) have no {reference} image: {_listing(extra)}"
            )
    if problems:
        raise ValueError(
            "the folders do not match by file name (relative path without extension):\n  "
            + "\n  ".join(problems)
            + "\nremove or rename the unmatched files, or score only the common ones"
        )
    return {label: [files[n] for n in names] for label, files in folders.items()}


def one_size(label: str, files: list[Path]) -> tuple[int, int]:
    """The (width, height) all ``files`` share; several sizes raise ``ValueError`` naming some."""
    sizes: dict[tuple[int, int], list[Path]] = {}
    for path in files:
        with Image.open(path) as im:
            sizes.setdefault(im.size, []).append(path)
    if len(sizes) > 1:
        common = max(sizes, key=lambda s: len(sizes[s]))
        odd = [
            f"{p.name} ({w}x{h})" for (w, h), ps in sizes.items() if (w, h) != common for p in ps
        ]
        raise ValueError(
            f"the {label} images must all have one size; most are {common[0]}x{common[1]} but "
            f"{_listing(odd)}"
        )
    return next(iter(sizes))


def file_digest(files: list[Path], *extra: object) -> str:
    """SHA-256 of the files' bytes in order (and of ``extra``, e.g. the size they are read at):
    the content key of an image set (FID feature cache)."""
    h = hashlib.sha256(repr(extra).encode())
    for path in files:
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


class FolderSet(Dataset):
    """Matched images of several folders: item ``i`` is ``{"index": i, label: uint8 (3, H, W)}``
    for each ``label`` of ``files`` (lists of equal length, images read at their own size)."""

    def __init__(self, files: dict[str, list[Path]]) -> None:
        lengths = {len(v) for v in files.values()}
        if len(lengths) != 1:
            raise ValueError(f"the matched lists differ in length: {lengths}")
        self.files = files

    def __len__(self) -> int:
        return len(next(iter(self.files.values())))

    def __getitem__(self, i: int) -> dict:
        return {"index": i, **{label: read_rgb(f[i]) for label, f in self.files.items()}}


class WithRestored(Dataset):
    """Items of a face dataset (``{"hq", "index"}``) with the restored images of other methods
    (``restored``: a ``FolderSet`` in the dataset's index order) added under their labels."""

    def __init__(self, dataset: Dataset, restored: FolderSet) -> None:
        self.dataset, self.restored = dataset, restored

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = self.dataset[i]
        return {**self.restored[int(item["index"])], **item}  # the face's own "index" kept
