"""``StreamingFaces``: faces packed by ``stage=prepare`` into LitData chunks, read by index.

The chunks are read through ``litdata.StreamingDataset`` as random-access storage
(``dataset[i]``): the training order stays ``GlobalOrderSampler``'s, one seeded global order
whatever the number of processes, and a resumed run continues it from the datamodule's own
state. LitData's own iteration deals chunks to ranks and shuffles per world size, and restores
its position only through its loader's state, which ``fit(ckpt_path=...)`` does not reload
(litData issue 775): neither the same weights on any number of processes nor the exact resume
would hold.

A prepared folder holds ``index.json`` and ``chunk-*.bin`` (LitData's), ``prepare.json`` (the
options it was packed with, the counts) and ``skipped.txt`` (the inputs that could not be read).
Each sample is ``{"image": PNG or JPEG bytes of a (S, S) RGB face, "name": its source path}``.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gpen_lightning.data.folder import to_square

__all__ = [
    "INFO_FILE",
    "SKIPPED_FILE",
    "StreamingFaces",
    "decode_face",
    "import_litdata",
    "is_remote",
    "read_info",
]

INFO_FILE = "prepare.json"  # what stage=prepare wrote: size, format, counts, source
SKIPPED_FILE = "skipped.txt"  # one "path<TAB>reason" line per input it could not read
REMOTE = ("s3://", "gs://", "gcs://", "azure://", "hf://", "local:")


def import_litdata():
    """``litdata``, imported with its PyPI version check off (a 30 s timeout offline) unless the
    environment says otherwise: the variable is set when LitData is first used, not on import of
    this module (importing the package changes nothing)."""
    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
    import litdata

    return litdata


def is_remote(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is an object-store URL (``s3://``, ``gs://``, ...) rather than a folder."""
    return str(root).startswith(REMOTE)


def read_info(root: str | os.PathLike[str]) -> dict | None:
    """The ``prepare.json`` of a local prepared folder (None for a URL or when it has none)."""
    if is_remote(root):
        return None
    path = Path(root).expanduser() / INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def decode_face(data: bytes) -> torch.Tensor:
    """PNG / JPEG bytes of an RGB face -> uint8 (3, H, W)."""
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB"))  # (H, W, 3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


class StreamingFaces(Dataset):
    """The faces of a ``stage=prepare`` output (a folder or an object-store URL) as uint8 (3, S, S).

    Args:
        root: the prepared folder, or its URL (``s3://bucket/faces-512``, ``gs://...``).
        size: model size S; faces packed at another size are resized on every read (prepare at
            the training size to avoid it).
        cache_dir: where LitData keeps the chunks of a URL it downloaded (its default otherwise);
            a local folder is read in place.
        max_cache_size: LitData's cache budget for downloaded chunks (e.g. ``"200GB"``; None: its
            default). Every process reads every chunk in an epoch: size it to hold the dataset.

    Items are ``{"hq": uint8 (3, S, S), "index": int}``, as ``FaceFolder``'s.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        size: int,
        cache_dir: str | os.PathLike[str] | None = None,
        max_cache_size: str | None = None,
    ) -> None:
        litdata = import_litdata()
        self.root, self.size = str(root), size
        if not is_remote(root):
            folder = Path(root).expanduser()
            if not (folder / "index.json").is_file():
                raise FileNotFoundError(
                    f"{folder} is not a prepared dataset (no index.json): make one with "
                    f"`python -m gpen_lightning stage=prepare input=FACES output={folder} "
                    f"size={size}`, or use data=folder for a folder of images"
                )
            self.root = str(folder)
            # read in place: LitData's note on its cache budget for downloads does not apply
            logging.getLogger("litdata.utilities.format").setLevel(logging.WARNING)
        options = {"max_cache_size": max_cache_size} if max_cache_size else {}
        self.stream = litdata.StreamingDataset(
            self.root,
            cache_dir=str(cache_dir) if cache_dir else None,
            shuffle=False,  # read by index: the order is the sampler's
            **options,
        )
        # every face: len(self.stream) is this rank's share of LitData's own iteration
        self.length = sum(end - start for start, end in self.stream.region_of_interest)
        if self.length == 0:
            raise ValueError(f"the prepared dataset {self.root} holds no faces")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        sample = self.stream[int(index)]
        img = to_square(decode_face(sample["image"]), self.size)  # unchanged at (3, S, S)
        return {"hq": img, "index": int(index)}

    def name(self, index: int) -> str:
        """The source path (relative to the prepared folder's input) of face ``index``."""
        return str(self.stream[int(index)]["name"])
