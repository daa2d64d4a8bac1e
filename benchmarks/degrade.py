"""Degradation throughput: our batched kornia pipeline vs a CPU OpenCV reference.

    python benchmarks/degrade.py                      # batch 16, 512 px, gfpgan preset
    python benchmarks/degrade.py --size 256 --batches 5

The reference is the GFPGAN degradation model as the official training code runs it: per image
with OpenCV in data-loader workers, one worker process per core. Ours runs batched on the device
the batch lives on (the GPU when there is one).
"""

from __future__ import annotations

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse
import math
import multiprocessing as mp
import time

import numpy as np
import torch

from common import loop_seconds
from gpen_lightning.data import Degradation, SyntheticFaces


def opencv_degrade(args: tuple[np.ndarray, int]) -> np.ndarray:
    """One image, GFPGAN model: blur (iso/aniso Gaussian, 41 px) -> down -> noise -> JPEG -> up."""
    import cv2

    img, seed = args
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    x = img.astype(np.float32) / 255
    sx = rng.uniform(0.1, 10)
    sy = sx if rng.uniform() < 0.5 else rng.uniform(0.1, 10)
    theta = rng.uniform(-math.pi, math.pi)
    ax = np.arange(41) - 20
    xx, yy = np.meshgrid(ax, ax)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    k = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    x = cv2.filter2D(x, -1, (k / k.sum()).astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
    scale = rng.uniform(0.8, 8)
    x = cv2.resize(
        x, (max(1, int(w / scale)), max(1, int(h / scale))), interpolation=cv2.INTER_LINEAR
    )
    x = np.clip(
        x + rng.standard_normal(x.shape).astype(np.float32) * rng.uniform(0, 20) / 255, 0, 1
    )
    q = int(rng.uniform(60, 100))
    _, enc = cv2.imencode(".jpg", (x * 255).round().astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, q])
    x = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    return cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)


def bench_opencv(images: np.ndarray, batches: int, workers: int) -> float:
    jobs = [(images[i % len(images)], i) for i in range(batches * len(images))]
    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(opencv_degrade, jobs[: len(images)])  # warm-up
        t0 = time.perf_counter()
        pool.map(opencv_degrade, jobs, chunksize=4)
        return len(jobs) / (time.perf_counter() - t0)


def bench_ours(hq: torch.Tensor, batches: int) -> float:
    deg = Degradation()
    deg(hq, seed=0)  # warm-up
    return batches * len(hq) / loop_seconds(lambda i: deg(hq, seed=i), batches, hq.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-opencv", action="store_true")
    args = parser.parse_args()

    faces = SyntheticFaces(size=args.size, length=args.batch, flip=False)
    hq = torch.stack([faces[i]["hq"] for i in range(args.batch)])
    print(
        f"# batch {args.batch}, {args.size} px, gfpgan preset, torch {torch.__version__}, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"ours, CPU ({torch.get_num_threads()} threads): {bench_ours(hq, args.batches):8.1f} img/s"
    )
    if torch.cuda.is_available():
        rate = bench_ours(hq.cuda(), args.batches)
        print(f"ours, {torch.cuda.get_device_name()}: {rate:8.1f} img/s")
    if not args.no_opencv:
        images = hq.permute(0, 2, 3, 1).numpy()[..., ::-1].copy()  # BGR HWC, as OpenCV reads
        rate = bench_opencv(images, args.batches, args.workers)
        print(f"OpenCV reference, {args.workers} worker processes: {rate:8.1f} img/s")


if __name__ == "__main__":
    main()
