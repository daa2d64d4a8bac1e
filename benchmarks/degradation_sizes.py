"""How strong a degradation preset is at each training size: the degraded input's PSNR / SSIM
against the HQ faces at 32 ... 512 px, with the spatial ranges in pixels at every size
(``reference_size=null``, the old behaviour) and following the face (``reference_size=512``).

    python benchmarks/degradation_sizes.py                       # ../shared faces-hq, gfpgan
    python benchmarks/degradation_sizes.py --faces DIR --preset paper --sizes 64 512

The same faces and the same seeds (``degrade_fixed``, seed 1234) at every size; PSNR and SSIM on
[0, 1] RGB against the (possibly grayed) HQ target, as ``stage=evaluate`` scores the input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hydra.utils import instantiate
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from gpen_lightning.config import compose
from gpen_lightning.data import FaceFolder, SyntheticFaces
from gpen_lightning.data.datamodule import degrade_fixed

SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-hq"


def input_scores(degradation, dataset, *, seed: int = 1234, batch: int = 16) -> tuple[float, float]:
    """Mean PSNR (dB) and SSIM of the degraded faces against their HQ targets."""
    psnr, ssim, kw = 0.0, 0.0, dict(data_range=1.0, reduction="none")
    for start in range(0, len(dataset), batch):
        indices = list(range(start, min(start + batch, len(dataset))))
        hq = torch.stack([dataset[i]["hq"] for i in indices])
        pair = degrade_fixed(degradation, hq, indices, seed=seed)
        lq, target = pair["lq"].float() / 255, pair["hq"].float() / 255
        psnr += float(peak_signal_noise_ratio(lq, target, dim=(1, 2, 3), **kw).sum())
        ssim += float(structural_similarity_index_measure(lq, target, **kw).sum())
    return psnr / len(dataset), ssim / len(dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=SHARED_FACES, help="aligned HQ faces")
    parser.add_argument("--preset", default="gfpgan", help="conf/degradation/<preset>.yaml")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--max-faces", type=int, default=86)
    args = parser.parse_args()
    cfg = compose([f"degradation={args.preset}", "paths.output_dir=/tmp/unused"]).degradation
    source = f"{args.faces}" if args.faces.is_dir() else "procedural faces (no --faces folder)"
    print(f"# degraded input vs HQ, preset {args.preset}, {source}")
    print("| size | pixels at every size: PSNR / SSIM | following the face: PSNR / SSIM |")
    print("| --- | --- | --- |")
    for size in args.sizes:
        if args.faces.is_dir():
            dataset = FaceFolder(args.faces, size=size, flip=False)
        else:
            dataset = SyntheticFaces(size=size, length=args.max_faces, flip=False)
        dataset = torch.utils.data.Subset(dataset, range(min(args.max_faces, len(dataset))))
        cells = []
        for reference in (None, cfg.reference_size):
            degradation = instantiate(cfg, reference_size=reference)
            cells.append("{:.2f} dB / {:.3f}".format(*input_scores(degradation, dataset)))
        print(f"| {size} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
