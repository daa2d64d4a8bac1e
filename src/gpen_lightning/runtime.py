"""Process-wide runtime options, applied only when asked for (importing the package changes
nothing)."""

from __future__ import annotations

import os
import sys

__all__ = ["close_process_group", "use_cpu_huge_pages"]


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
