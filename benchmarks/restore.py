"""Faces per second of the whole restoration pipeline (detect, align, restore, paste back).

    python benchmarks/restore.py                                   # 256 and 512, CPU, Solvay 1927
    python benchmarks/restore.py --presets gpen-bfr-512 --image photo.jpg --batch 4 --repeats 3

Random weights (speed does not depend on them). The default photo is ../shared's Solvay 1927
conference photo (29 faces); give --image when ../shared is absent. Prints one line per preset
with the time split into detection, alignment, network and paste-back. Videos (frames/s of a 720p
clip, split into decode, detection, tracking, network, paste-back and encode; flicker):
``python benchmarks/video.py`` (``make bench`` runs both).
"""

from __future__ import annotations

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse
import json
import time
from pathlib import Path

import torch

from common import sync
from gpen_lightning.data.folder import read_rgb
from gpen_lightning.restore import Restorer

DEFAULT_IMAGE = (
    Path(__file__).resolve().parents[2] / "shared/data/wild/whole/Solvay_conference_1927.png"
)


def run(preset: str, image: torch.Tensor, *, batch: int, repeats: int, device: str) -> dict:
    restorer = Restorer(model=preset, device=device, batch_size=batch)
    restorer.restore(image)  # warm-up (detector session, kernels)
    parts = {"detect": 0.0, "align": 0.0, "network": 0.0, "paste": 0.0}
    total, faces = 0.0, 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        found = restorer.detect(image)
        t1 = time.perf_counter()
        faces_, crops, matrices = restorer._plan(image, found)
        t2 = time.perf_counter()
        out = restorer.restore_faces(crops)
        sync(device)
        t3 = time.perf_counter()
        restorer._paste(image, faces_, crops, out, matrices)
        t4 = time.perf_counter()
        for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            parts[k] += dt / repeats
        total += (t4 - t0) / repeats
        faces = len(faces_)
    return {
        "preset": preset,
        "faces": faces,
        "seconds": total,
        "faces_per_s": faces / total if total else 0.0,
        **{f"{k}_s": v for k, v in parts.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["gpen-bfr-256", "gpen-bfr-512"])
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--batch", type=int, default=8, help="faces per network call")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if not args.image.is_file():
        if args.image == DEFAULT_IMAGE:  # ../shared is optional
            print(f"skipped: {args.image} not found; pass --image PATH (a photo with faces)")
            return
        raise SystemExit(f"{args.image} not found: pass --image PATH (a photo with faces)")
    image = read_rgb(args.image)
    print(
        f"{args.image.name}: {image.shape[2]}x{image.shape[1]}, device {args.device}, "
        f"{torch.get_num_threads()} threads, batch {args.batch}"
    )
    rows = []
    for preset in args.presets:
        r = run(preset, image, batch=args.batch, repeats=args.repeats, device=args.device)
        rows.append(r)
        print(
            f"{preset:14s} {r['faces']:3d} faces  {r['seconds']:7.2f} s  "
            f"{r['faces_per_s']:6.2f} faces/s  (detect {r['detect_s']:.2f} s, align "
            f"{r['align_s']:.2f} s, network {r['network_s']:.2f} s, paste {r['paste_s']:.2f} s)"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
