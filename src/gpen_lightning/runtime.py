"""Process-wide runtime options, applied only when asked for (importing the package changes
nothing)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

__all__ = ["close_process_group", "process_count", "resolve_device", "use_cpu_huge_pages"]


def use_cpu_huge_pages(enabled: bool = True) -> bool:
    """Back large CPU tensors with transparent huge pages (PyTorch's ``THP_MEM_ALLOC_ENABLE``).

    On CPU, page faults on fresh activations can cost more than the elementwise arithmetic on them:
    GPEN-512 at batch 1 on a 2-core AMD EPYC VM takes 2.5-2.7 s per face with huge pages and
    3.0-3.5 s without (``benchmarks/infer.py``, same session). PyTorch reads the variable once, at
    its first CPU allocation, so call this before importing torch (``python -m gpen_lightning``
    does, from the ``cpu_huge_pages`` option). A value already in the environment wins.

    Returns:
        whether the setting can still take effect (torch not imported yet); when it cannot, the
        environment is left untouched.
    """
    if "torch" in sys.modules:
        return False
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1" if enabled else "0")
    return True


def close_process_group() -> None:
    """End this process's part in a distributed run: wait for the others, then destroy the
    default process group. Lightning leaves it open; a gloo group still alive at interpreter exit
    can abort the process ("terminate called without an active exception", exit -6) after all
    its work was written. No-op when not distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def resolve_device(device: str | None = "auto"):
    """The one meaning of ``device=auto`` (and None): CUDA when a GPU is visible, else the CPU;
    any other value (``cpu``, ``cuda:1``, a ``torch.device``) is taken as given."""
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def process_count(trainer: Mapping) -> int:
    """How many processes Lightning starts for a ``trainer`` config (its ``accelerator``,
    ``devices`` and ``num_nodes``; Lightning's defaults where absent): the one definition the
    training and restore stages share.

    ``devices``: an int (``-1``: every device), a list of device indices, a string of either
    (``"2"``, ``"0,1"``), or ``"auto"`` (every visible GPU when the accelerator is a GPU, or is
    auto and a GPU is visible; else 1, as Lightning's CPU accelerator).
    """
    import torch

    accelerator = trainer.get("accelerator", "auto")
    devices, num_nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    gpu = str(accelerator) in ("gpu", "cuda") or (
        str(accelerator) == "auto" and torch.cuda.is_available()
    )
    visible = torch.cuda.device_count() if gpu else 1
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            devices = -1 if gpu else 1
        elif "," in text:
            devices = [d for d in text.split(",") if d.strip()]
        else:
            devices = int(text)
    if devices is None:
        devices = 1
    count = len(devices) if isinstance(devices, Sequence) else int(devices)
    if count == -1:
        count = max(visible, 1)
    if count < 1:
        raise ValueError(f"trainer.devices={devices!r} asks for no device; use 1 or more")
    return count * max(int(num_nodes or 1), 1)
