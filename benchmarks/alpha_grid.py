"""The fidelity control as a picture: one face restored with alpha 0, 0.5 and 1, side by side.

    python benchmarks/alpha_grid.py --weights gpen.pt --out alpha.png             # a synthetic face
    python benchmarks/alpha_grid.py --weights GPEN-BFR-512.pth --image lq_crop.png --out alpha.png

Without ``--image`` a procedural face (seed 1) is degraded by the gfpgan pipeline (seeded) at
the network's size, so the picture needs nothing but the weights. Prints each panel's PSNR
against the clean face when there is one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gpen_lightning.data.folder import read_rgb
from gpen_lightning.data.synthetic import render_face
from gpen_lightning.restore import Restorer


def degraded_face(size: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(clean, degraded) (S, S, 3) uint8: a procedural face through the gfpgan degradation."""
    from hydra.utils import instantiate

    from gpen_lightning.config import compose
    from gpen_lightning.data.datamodule import degrade_fixed

    degradation = instantiate(compose(["degradation=gfpgan"]).degradation)
    hq = render_face(size, torch.Generator().manual_seed(seed))[None]
    lq = degrade_fixed(degradation, hq, torch.tensor([0]), seed=seed)["lq"][0]  # uint8 as hq
    return hq[0].permute(1, 2, 0).numpy(), lq.permute(1, 2, 0).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--image", type=Path, help="an aligned LQ face crop (default: synthetic)")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--scale", type=int, default=4, help="nearest-neighbour zoom of the panels")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    probe = Restorer(args.weights, device="cpu")
    clean = None
    if args.image:
        lq = read_rgb(args.image).permute(1, 2, 0).numpy()
    else:
        clean, lq = degraded_face(probe.size)
    panels = []
    for a in args.alphas:
        probe.alpha = a
        out = probe.restore(lq, aligned=True).image
        if clean is not None:
            mse = np.mean((out.astype(np.float64) - clean) ** 2)
            print(f"alpha {a:.2f}: PSNR {10 * np.log10(255**2 / mse):.2f} dB vs the clean face")
        panels.append(out)
    if clean is not None:
        panels.append(clean)
    grid = np.concatenate(panels, axis=1)
    grid = grid.repeat(args.scale, 0).repeat(args.scale, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(args.out)
    print(
        f"wrote {args.out}: alpha {', '.join(map(str, args.alphas))}"
        + (", clean" if clean is not None else "")
    )


if __name__ == "__main__":
    main()
