"""Helpers the benchmark scripts share: device synchronisation and timing, the machine line,
freeing memory between configurations, error rows and JSON lines. The scripts run as
``python benchmarks/X.py``, which puts this folder first on ``sys.path``: they import it as
``common``."""

from __future__ import annotations

import gc
import json
import math
import platform
import time

import torch


def sync(device: str | torch.device) -> None:
    """Wait for the work queued on ``device`` (nothing to wait for off CUDA)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def call_seconds(fn, *args, repeats: int, warmup: int, device: str | torch.device) -> list[float]:
    """Wall-clock seconds of each of ``repeats`` calls ``fn(*args)`` after ``warmup`` untimed
    ones, the device synchronised around each call."""
    times = []
    for i in range(warmup + repeats):
        sync(device)
        t0 = time.perf_counter()
        fn(*args)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def loop_seconds(fn, n: int, device: str | torch.device) -> float:
    """Wall-clock seconds of ``fn(0)``, ..., ``fn(n - 1)`` in a row, the device synchronised at
    both ends of the window only."""
    sync(device)
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    sync(device)
    return time.perf_counter() - t0


def machine(device: str | torch.device) -> str:
    """The GPU's name (or the CPU's and its thread count) and the torch version."""
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return f"{name} | torch {torch.__version__}"


def free_memory(device: str | torch.device) -> None:
    """Drop what the last configuration left (modules, Trainer) and the allocator's cache; reset
    the peak-memory counters."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def error_text(exc: BaseException) -> str:
    """``TypeName: the first line of the message`` (at most 300 characters of it)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def append_jsonl(path, row: dict) -> None:
    """Append ``row`` as one JSON line (NaN -> null) to ``path``; nothing without a path."""
    if not path:
        return
    clean = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()
    }
    with open(path, "a") as f:
        f.write(json.dumps(clean) + "\n")
