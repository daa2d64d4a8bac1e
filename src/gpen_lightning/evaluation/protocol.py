"""The scoring loop every protocol of ``stage=evaluate`` shares: each batch brings its HQ faces
(or none, on a real set), its LQ faces, baselines and other methods' restored images; every
network restores the LQ faces; every method is scored by one ``ScoreBook`` with exactly the same
code. Outputs are rounded to uint8, as a saved image holds them, so that a method scored from its
saved files and the same images scored in-process agree."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from gpen_lightning.metrics.scorer import ScoreBook, to_uint8
from gpen_lightning.ranges import to_signed, to_unit

__all__ = ["bicubic_baseline", "resize_uint8", "restore_uint8", "score_batches"]

Prepared = dict  # {"names", "hq": uint8 | None, "lq": uint8, "baselines": {..}, "restored": {..}}


def resize_uint8(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> (B, 3, *size), bicubic (antialiased when shrinking); unchanged if
    already that size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    x = F.interpolate(images.float(), size=size, mode="bicubic", antialias=True)
    return x.round().clamp(0, 255).byte()


def bicubic_baseline(lq: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Each LQ face (uint8) shrunk by its degradation ``scale`` (area) and upsampled back
    bicubically: the bicubic baseline of the synthetic protocol, uint8."""
    out = []
    size = lq.shape[-1]
    for x, s in zip(lq.float().div(255), scale.tolist()):
        low = max(1, round(size / max(s, 1.0)))
        small = F.interpolate(x[None], size=(low, low), mode="area")
        out.append(F.interpolate(small, size=(size, size), mode="bicubic", align_corners=False))
    return to_uint8(torch.cat(out).clamp(0, 1))


@torch.no_grad()
def restore_uint8(
    net: torch.nn.Module, lq: torch.Tensor, *, size: tuple[int, int] | None, device
) -> torch.Tensor:
    """``net`` on uint8 LQ faces: resized to the network's size if needed, the output resized
    to ``size`` (the HQ size; None: kept) and rounded to uint8 (on the CPU)."""
    x = resize_uint8(lq, (net.size, net.size)).to(device)
    out = to_uint8(to_unit(net(to_signed(x, 255)).float().clamp(-1, 1))).cpu()
    return resize_uint8(out, size) if size is not None else out


def _save(folder: Path, names: list[str], images: torch.Tensor) -> None:
    for name, image in zip(names, images):
        path = folder / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(path)


@torch.no_grad()
def score_batches(
    batches: Iterable,
    prepare: Callable[[dict], Prepared],
    *,
    nets: dict[str, torch.nn.Module],
    book: ScoreBook,
    device: torch.device,
    n_grid: int = 8,
    save_images: Path | None = None,
) -> tuple[int, torch.Tensor]:
    """Score every method on every batch (``prepare`` turns a loader batch into ``Prepared``).
    Returns ``(faces, grid)``; ``grid`` holds, per face, the columns [input, other baselines,
    networks, restored folders, HQ] (float in [0, 1]). ``save_images``: each method's images
    (and the HQ faces, as ``hq``) as ``<folder>/<method>/<name>.png``: ``input`` and ``hq`` of a
    synthetic run are a paired set for ``lq=... hq=...`` and for other methods to restore."""
    count, rows = 0, []
    for batch in tqdm(batches, desc="evaluate", unit="batch"):
        p = prepare(batch)
        hq = p["hq"]
        size = tuple(hq.shape[-2:]) if hq is not None else None
        ref = book.scorer.reference(hq) if hq is not None else None
        if hq is not None:
            book.add("hq", hq, None, scored=False)  # FID's reference features only
            if save_images is not None:
                _save(save_images / "hq", p["names"], hq)
        outputs = dict(p["baselines"])
        for name, net in nets.items():
            outputs[name] = restore_uint8(net, p["lq"], size=size, device=device)
        outputs.update(p["restored"])
        for method, images in outputs.items():
            book.add(method, images, ref)
            if save_images is not None:
                _save(save_images / method, p["names"], images)
        count += len(p["lq"])
        if sum(len(r) for r in rows) < n_grid:
            columns = [*outputs.values(), *([hq] if hq is not None else [])]
            side = max(x.shape[-1] for x in columns)  # each face's columns resized to one size
            columns = [resize_uint8(x.cpu(), (side, side)).float().div(255) for x in columns]
            rows.append(torch.stack(columns, 1))  # (B, columns, 3, side, side)
    if count == 0:
        raise ValueError("the evaluation set is empty")
    grid = torch.cat(rows)[:n_grid].flatten(0, 1) if rows else torch.zeros(0, 3, 8, 8)
    return count, grid
