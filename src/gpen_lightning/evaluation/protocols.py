"""The three sets ``stage=evaluate`` scores, each as a dataset and a ``prepare`` function for
``protocol.score_batches``:

- ``synthetic``: HQ faces (a folder, or procedural ones) degraded with the seeded preset (face i
  always gets the same LQ); baselines: the LQ input and bicubic upsampling.
- ``paired``: a fixed LQ folder and its HQ folder, matched by file name; baseline: the input
  (bicubically resized to the HQ size if smaller).
- ``real``: LQ faces only (no HQ): no-reference metrics and FID against a reference set.

Each may bring ``restored`` folders: other methods' outputs, matched by file name, scored next to
the networks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from gpen_lightning.data.datamodule import degrade_fixed
from gpen_lightning.data.folder import FaceFolder
from gpen_lightning.data.synthetic import SyntheticFaces
from gpen_lightning.evaluation.protocol import bicubic_baseline, resize_uint8
from gpen_lightning.evaluation.sets import (
    FolderSet,
    WithRestored,
    file_digest,
    image_files,
    match_files,
    one_size,
)

__all__ = [
    "EvalSet",
    "paired_set",
    "real_set",
    "restored_labels",
    "synthetic_prepare",
    "synthetic_set",
]


@dataclass
class EvalSet:
    """A protocol's faces: ``dataset``, ``prepare`` (loader batch -> ``Prepared``), the faces'
    ``names`` (file names; None for procedural faces), the HQ ``size`` (H, W) or None, the
    baselines' names, the protocol name and the content ``digests`` of its folder sets (the FID
    feature cache)."""

    name: str
    dataset: Dataset
    prepare: Callable[[dict], dict]
    names: list[str] | None
    size: tuple[int, int] | None
    baselines: list[str]
    digests: dict[str, str]


def restored_labels(restored) -> dict[str, Path]:
    """``restored`` (a folder, a list of folders, or ``{label: folder}``) as ``{label: folder}``;
    a folder's label is its name."""
    if not restored:
        return {}
    if isinstance(restored, str | os.PathLike):
        restored = [restored]
    if isinstance(restored, dict):
        return {str(k): Path(v) for k, v in restored.items()}
    labels = {Path(f).expanduser().name: Path(f).expanduser() for f in restored}
    if len(labels) != len(restored):
        raise ValueError(f"restored folders need distinct names (or give a mapping): {restored}")
    return labels


def _restored_files(
    names: list[str], restored: dict[str, Path], *, reference: str, size, subset: bool = False
):
    """Each restored folder's files in the order of ``names`` (of one size, ``size`` (H, W) if
    given); ``subset``: the folders may hold more faces than ``names``."""
    folders = {label: image_files(path) for label, path in restored.items()}
    if subset:
        wanted = set(names)
        folders = {k: {n: p for n, p in v.items() if n in wanted} for k, v in folders.items()}
    files = match_files(names, folders, reference=reference)
    if not files:
        return {}
    for label, paths in files.items():
        got = one_size(f"restored {label}", paths)
        if size is not None and got[::-1] != tuple(size):
            raise ValueError(
                f"the restored {label} images are {got[0]}x{got[1]} but the {reference} images "
                f"are {size[1]}x{size[0]}: restore at the HQ size"
            )
    return files


def synthetic_set(
    hq: str | None,
    *,
    size: int,
    degradation: torch.nn.Module,
    seed: int,
    restored: dict[str, Path],
    synthetic_length: int = 64,
    max_images: int | None = None,
) -> EvalSet:
    """HQ faces of folder ``hq`` (resized to ``size``; None: procedural faces), degraded once
    per face with ``degradation`` seeded by ``seed`` and the face's index."""
    if hq:
        faces = FaceFolder(hq, size=size, flip=False)
        names = [f.relative_to(faces.root).with_suffix("").as_posix() for f in faces.files]
    else:
        faces = SyntheticFaces(size=size, length=synthetic_length, flip=False)
        names = [f"{i:06d}" for i in range(len(faces))]
    kept = names[: max_images or None]
    digests = {"hq": file_digest(faces.files[: len(kept)], size)} if hq else {}
    dataset: Dataset = faces
    if restored:
        files = _restored_files(
            kept, restored, reference="HQ", size=(size, size), subset=len(kept) < len(names)
        )
        pad = [None] * (len(names) - len(kept))  # the faces past max_images are never read
        dataset = WithRestored(faces, FolderSet({k: v + pad for k, v in files.items()}))
        digests.update({k: file_digest(v) for k, v in files.items()})
    dataset = Subset(dataset, range(len(kept))) if len(kept) < len(names) else dataset
    prepare = synthetic_prepare(degradation, seed, names=names, labels=list(restored))
    return EvalSet("synthetic", dataset, prepare, kept, (size, size), ["input", "bicubic"], digests)


def synthetic_prepare(
    degradation: torch.nn.Module,
    seed: int,
    *,
    names: list[str] | None = None,
    labels: list[str] = (),
) -> Callable[[dict], dict]:
    """The synthetic protocol's ``prepare``: a batch ``{"hq", "index", <restored labels>}``
    degraded with ``degradation`` (face i seeded by ``seed`` and i), its baselines the input and
    bicubic upsampling of its low-resolution version."""

    def prepare(batch: dict) -> dict:
        pair = degrade_fixed(degradation, batch["hq"], batch["index"], seed=seed)
        lq, index = pair["lq"], [int(i) for i in batch["index"]]
        return {
            "names": [names[i] for i in index] if names else [f"{i:06d}" for i in index],
            "hq": pair["hq"],
            "lq": lq,
            "baselines": {"input": lq, "bicubic": bicubic_baseline(lq, pair["params"]["scale"])},
            "restored": {label: batch[label] for label in labels},
        }

    return prepare


def _folder_prepare(
    names: list[str], labels: Iterable[str], *, hq: str | None, baseline: Callable
) -> Callable[[dict], dict]:
    """The ``prepare`` of a ``FolderSet``'s batches: the LQ faces under ``"LQ"``, the HQ ones
    under ``hq`` (None: no HQ), the input baseline ``baseline(LQ)`` and the restored ``labels``."""
    labels = list(labels)

    def prepare(batch: dict) -> dict:
        return {
            "names": [names[int(i)] for i in batch["index"]],
            "hq": batch[hq] if hq else None,
            "lq": batch["LQ"],
            "baselines": {"input": baseline(batch["LQ"])},
            "restored": {label: batch[label] for label in labels},
        }

    return prepare


def paired_set(lq: str, hq: str, *, restored: dict[str, Path]) -> EvalSet:
    """A fixed paired set: folder ``lq`` matched to folder ``hq`` by file name; each folder's
    images of one size, the restored ones of the HQ size."""
    hq_files = image_files(hq)
    names = list(hq_files)
    files = match_files(names, {"LQ": image_files(lq)}, reference="HQ")
    files["HQ"] = [hq_files[n] for n in names]
    w, h = one_size("HQ", files["HQ"])
    one_size("LQ", files["LQ"])
    files.update(_restored_files(names, restored, reference="HQ", size=(h, w)))
    digests = {("hq" if k == "HQ" else k): file_digest(v) for k, v in files.items() if k != "LQ"}
    prepare = _folder_prepare(names, restored, hq="HQ", baseline=partial(resize_uint8, size=(h, w)))
    return EvalSet("paired", FolderSet(files), prepare, names, (h, w), ["input"], digests)


def real_set(lq: str, *, restored: dict[str, Path]) -> EvalSet:
    """Real LQ faces (no HQ): folder ``lq`` and the restored folders matched to it by name."""
    lq_files = image_files(lq)
    names = list(lq_files)
    files = {"LQ": [lq_files[n] for n in names]}
    one_size("LQ", files["LQ"])
    files.update(_restored_files(names, restored, reference="LQ", size=None))
    digests = {("input" if k == "LQ" else k): file_digest(v) for k, v in files.items()}
    prepare = _folder_prepare(names, restored, hq=None, baseline=lambda lq: lq)
    return EvalSet("real", FolderSet(files), prepare, names, None, ["input"], digests)
