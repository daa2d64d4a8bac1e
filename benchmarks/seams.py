"""Paste-back seams: the template's feathered square against each face's landmark hull.

    python benchmarks/seams.py                         # ../shared/data/wild/whole, stand-ins
    python benchmarks/seams.py --images DIR --weights GPEN-BFR-512.pth

For every detected face the restored crop F and each paste mask M are warped back into the photo
and the seam is measured where the mask fades (0.02 < M < 0.98): the RMS of (F - B) * |grad M|,
the part of the composite's gradient that the paste itself adds (``restore.paste.seam_energy``).
Restorations: ``tone`` (a smooth global change, 0.9 x + 0.08, as a GAN's colour drift),
``texture`` (the crop blurred by sigma S/128: detail changed, colour kept) and, with
``--weights``, a real GPEN. Prints one row per restoration with the mean seam of each mask.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import kornia.filters as KF
import numpy as np
import torch

from gpen_lightning.data.folder import IMAGE_EXTENSIONS, read_rgb
from gpen_lightning.restore import Restorer
from gpen_lightning.restore.paste import face_mask, hull_mask, inverse_warp_roi, seam_energy

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared/data/wild/whole"


def _tone(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2 * 0.9 + 0.08) * 2 - 1


def _texture(x: torch.Tensor) -> torch.Tensor:
    s = x.shape[-1] / 128
    k = 2 * int(3 * s) + 1
    return KF.gaussian_blur2d(x, (k, k), (s, s), border_type="reflect")


def measure(restorer: Restorer, image: torch.Tensor, network) -> dict[str, list[float]]:
    faces, crops, matrices = restorer._plan(image)
    out = {"template": [], "template-wide": [], "hull": []}
    if not faces:
        return out
    with torch.no_grad():
        restored = (network(crops).clamp(-1, 1) + 1) / 2
    h, w = image.shape[-2:]
    bg = image.float() / 255
    size = restorer.size
    # the square with the hull's fade (sigma 0.1 eye distance, ~12.6 px at 512; blurred twice)
    wide = face_mask(size, border=40 / 512, sigma=12.6 / 512 / 2**0.5)
    for face, f, m in zip(faces, restored, matrices):
        lm_crop = face.landmarks @ m[:, :2].T + m[:, 2]
        masks = {
            "template": face_mask(size),
            "template-wide": wide,
            "hull": hull_mask(size, lm_crop),
        }
        for name, mask in masks.items():
            warped = inverse_warp_roi(torch.cat([f, mask[0]]), m, h, w)
            if warped is None:
                continue
            patch, (y0, y1, x0, x1) = warped
            out[name].append(seam_energy(bg[:, y0:y1, x0:x1], patch[:3], patch[3:].clamp(0, 1)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--weights", default=None, help="a GPEN .pth / gpen.pt to measure too")
    parser.add_argument("--size", type=int, default=512, help="crop size of the stand-ins")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise SystemExit(f"no images in {args.images}")
    networks = {"tone": (_tone, args.size), "texture": (_texture, args.size)}
    if args.weights:
        from gpen_lightning.zoo.weights import load_restoration_model

        net = load_restoration_model(args.weights).eval()
        networks[f"gpen ({Path(args.weights).name})"] = (net, net.size)
    images = [read_rgb(p) for p in files]
    rows = []
    print("| restoration | faces | template | template, hull's fade | hull | hull / template |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (network, size) in networks.items():
        restorer = Restorer(network, size=size, device="cpu")
        seams = {"template": [], "template-wide": [], "hull": []}
        for image in images:
            for k, v in measure(restorer, image, network).items():
                seams[k] += v
        t, tw, hl = (float(np.mean(seams[k])) * 255 for k in seams)
        n = len(seams["hull"])
        rows.append(
            {"restoration": name, "faces": n, "template": t, "template_wide": tw, "hull": hl}
        )
        print(f"| {name} | {n} | {t:.3f} | {tw:.3f} | {hl:.3f} | {hl / t:.2f} |")
    print("seam: RMS of (F - B) * |grad M| over the mask's fade, 0-255 units per pixel")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
