"""File helpers shared by every layer: atomic writes, so an interrupted save never leaves a
truncated checkpoint or image behind."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_save", "atomic_write", "latest_file"]


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
