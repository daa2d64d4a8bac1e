"""File helpers shared by every layer: atomic writes, so an interrupted save never leaves a
truncated checkpoint or image behind, and the check that an optional network's weights file is
there (``require_weights``: nothing is ever downloaded)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["MissingWeightsError", "atomic_save", "atomic_write", "latest_file", "require_weights"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path`` (same folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj, path)`` through a temporary file and an atomic rename."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def latest_file(
    root: str | os.PathLike[str],
    stage: str,
    name: str,
    where: Callable[[Path], bool] | None = None,
) -> Path | None:
    """The newest ``name`` written by ``stage`` runs under ``root/stage`` (runs and sweeps); with
    ``where``, the newest for which ``where(path)`` holds (tried newest first)."""
    found = sorted(Path(root, stage).rglob(name), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((p for p in found if where is None or where(p)), None)


class MissingWeightsError(FileNotFoundError):
    """An optional loss or metric was switched on without its weights file."""


def require_weights(path: str | os.PathLike[str] | None, *, what: str, how: str) -> Path:
    """``path`` as a ``Path`` if it names a file, else ``MissingWeightsError`` saying that ``what``
    (the loss or metric) needs it and ``how`` to get it."""
    if not path:
        raise MissingWeightsError(f"{what} is enabled but no weights file was given: {how}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"{what}: weights file {path} does not exist; {how}")
    return path
