"""Throughput of the training input path on this CPU: images/s of one loader worker for a folder of
1024 px PNGs (decoded and resized to 512 on every read, ``FaceFolder``) against the same faces
packed by ``stage=prepare`` at 512 and 256 px (LitData chunks, lossless PNG, read by index as
``data=streaming`` does), side by side in one run, with the bytes each stores per image.

    python benchmarks/data.py                          # ../shared faces-hq (86 faces, 1024 px)
    python benchmarks/data.py --faces DIR --n 64 --repeats 3

One worker = one process reading items one after another (``num_workers=0``: what each of a
loader's workers does), in a random order like the training sampler's, after one warm-up pass;
the median of ``--repeats`` passes. The 1024 px sources are the faces as they are (faces-hq is
FFHQ at 1024; smaller faces are upsampled to 1024 with a bicubic filter first and the run says
so). ``--gpu-rate`` (training img/s per GPU) turns the figures into loader workers per GPU.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from gpen_lightning.data import FaceFolder
from gpen_lightning.data.streaming import StreamingFaces
from gpen_lightning.prepare import prepare_faces

SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-hq"
SOURCE = 1024  # px of the folder's PNGs


def sources(faces: Path, out: Path, n: int) -> tuple[Path, bool]:
    """Up to ``n`` faces of ``faces`` as 1024 px PNGs in ``out``; whether any was upsampled."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in faces.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"no faces in {faces} (pass --faces DIR)")
    upsampled = False
    for i, f in enumerate(files[:n]):
        with Image.open(f) as im:
            im = im.convert("RGB")
            if im.size != (SOURCE, SOURCE):
                im, upsampled = im.resize((SOURCE, SOURCE), Image.BICUBIC), True
            im.save(out / f"{i:05d}.png")
    return out, upsampled


def images_per_s(dataset, *, repeats: int, seed: int = 0) -> float:
    """Median images/s of reading every item of ``dataset`` in a random order, one process."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    for i in order:  # warm-up: page cache, decoders, LitData's index
        dataset[i]
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in order:
            dataset[i]["hq"]
        rates.append(len(order) / (time.perf_counter() - t0))
    return statistics.median(rates)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line]
    return names[0] if names else "unknown CPU"


def measure(folder: Path, work: Path, *, repeats: int, workers: int) -> list[dict]:
    """The rows: folder at 512, chunks at 512 and 256."""
    count = len(list(folder.glob("*.png")))
    rows = [
        {
            "input": f"folder, PNG {SOURCE} px, resized to 512 on every read",
            "size": 512,
            "bytes": sum(p.stat().st_size for p in folder.glob("*.png")) / count,
            "img_s": images_per_s(FaceFolder(folder, size=512, flip=False), repeats=repeats),
        }
    ]
    for size in (512, 256):
        packed = work / f"chunks-{size}"
        info = prepare_faces(input=folder, output=packed, size=size, workers=workers)
        rows.append(
            {
                "input": f"prepared chunks, PNG {size} px (stage=prepare)",
                "size": size,
                "bytes": info["bytes"] / info["faces"],
                "img_s": images_per_s(StreamingFaces(packed, size=size), repeats=repeats),
            }
        )
    return rows


def table(rows: list[dict], gpu_rate: float | None) -> str:
    head = "| input | img/s per worker | KiB per image |"
    lines = [head, "| --- | --- | --- |"]
    if gpu_rate:
        lines = [head[:-1] + f" workers for {gpu_rate:g} img/s |", "| --- | --- | --- | --- |"]
    for r in rows:
        cells = [r["input"], f"{r['img_s']:.1f}", f"{r['bytes'] / 1024:.0f}"]
        if gpu_rate:
            cells.append(f"{gpu_rate / r['img_s']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, default=SHARED_FACES)
    parser.add_argument("--n", type=int, default=86, help="faces to use")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="stage=prepare processes")
    parser.add_argument("--gpu-rate", type=float, default=None, help="training img/s per GPU")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a loader worker runs one thread
    with tempfile.TemporaryDirectory(prefix="gpen-data-bench-") as tmp:
        folder, upsampled = sources(args.faces, Path(tmp) / "png1024", args.n)
        rows = measure(folder, Path(tmp), repeats=args.repeats, workers=args.workers)
    used = min(args.n, len(list(args.faces.iterdir())))
    print(f"\n{cpu_model()}, 1 thread, {used} faces of {args.faces}, median of {args.repeats}")
    if upsampled:
        print(f"(sources smaller than {SOURCE} px were upsampled to {SOURCE} px, bicubic)")
    print(table(rows, args.gpu_rate))


if __name__ == "__main__":
    main()
