"""``stage=evaluate``: degrade HQ faces with a seeded preset, restore them, and score the result
against the HQ faces next to two baselines (the degraded input, bicubic upsampling) with the
field's metrics: PSNR and SSIM always; LPIPS, FID and the ArcFace identity
distance when their local weights are configured."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch.utils.data import DataLoader
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)
from torchvision.utils import make_grid, save_image
from tqdm import tqdm

from gpen_lightning.data.datamodule import degrade_fixed, stack_faces
from gpen_lightning.data.folder import FaceFolder
from gpen_lightning.data.synthetic import SyntheticFaces
from gpen_lightning.io import atomic_write
from gpen_lightning.losses import networks
from gpen_lightning.metrics import load_fid, swd
from gpen_lightning.metrics.bootstrap import interval_table, paired_table
from gpen_lightning.metrics.wasserstein import SlicedWassersteinDistance
from gpen_lightning.ranges import to_signed, to_unit
from gpen_lightning.runtime import resolve_device
from gpen_lightning.zoo.generator import Generator
from gpen_lightning.zoo.presets import match_preset
from gpen_lightning.zoo.weights import load_restoration_model

__all__ = ["EvaluateStage", "evaluate", "format_table", "write_reports"]

log = logging.getLogger(__name__)

METHODS = ("input", "bicubic", "gpen")


def _bicubic(lq: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The bicubic baseline: each LQ face (in [0, 1]) shrunk by its degradation scale (area) and
    upsampled back bicubically."""
    out = []
    size = lq.shape[-1]
    for x, s in zip(lq, scale.tolist()):
        low = max(1, round(size / max(s, 1.0)))
        small = F.interpolate(x[None], size=(low, low), mode="area")
        out.append(F.interpolate(small, size=(size, size), mode="bicubic", align_corners=False))
    return torch.cat(out).clamp(0, 1)


def _optional(kind: str, loader, path: str | None):
    if not path:
        return None
    try:
        return loader(path)
    except networks.MissingWeightsError as err:
        log.warning("%s skipped: %s", kind, err)
        return None


@dataclass
class _Scorers:
    """The optional metric networks: LPIPS, ArcFace (identity angle) and one FID per method."""

    lpips: torch.nn.Module | None = None
    arcface: torch.nn.Module | None = None
    fids: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, *, lpips_weights, lpips_net, fid_weights, id_weights, device) -> _Scorers:
        """Load what has a weight file (a missing file is named in a warning and skipped)."""
        lpips = _optional("LPIPS", lambda p: networks.load_lpips(p, lpips_net), lpips_weights)
        arcface = _optional("identity distance", networks.load_identity, id_weights)
        fids = {}
        for m in METHODS if fid_weights else ():
            fid = _optional("FID", load_fid, fid_weights)
            if fid is None:
                break
            fids[m] = fid.to(device)
        return cls(
            lpips=lpips.to(device) if lpips is not None else None,
            arcface=arcface.to(device) if arcface is not None else None,
            fids=fids,
        )

    def score(self, outputs: dict[str, torch.Tensor], hq: torch.Tensor) -> dict[str, dict]:
        """Per-face scores ``{method: {metric: (B,)}}`` of images in [0, 1] against ``hq``;
        FID states are updated."""
        hq_embedding = None
        if self.arcface is not None:  # the HQ side once per batch, shared by every method
            hq_embedding = self.arcface(networks.face_crop_112(to_signed(hq)))
        scores = {}
        for method, out in outputs.items():
            s = {
                "psnr": peak_signal_noise_ratio(
                    out, hq, data_range=1.0, reduction="none", dim=(1, 2, 3)
                ),
                "ssim": structural_similarity_index_measure(
                    out, hq, data_range=1.0, reduction="none"
                ),
            }
            if self.lpips is not None:
                s["lpips"] = self.lpips(to_signed(out), to_signed(hq)).flatten()
            if hq_embedding is not None:
                embedding = self.arcface(networks.face_crop_112(to_signed(out)))
                cos = (embedding * hq_embedding).sum(1).clamp(-1, 1)
                s["id_deg"] = torch.rad2deg(torch.arccos(cos))
            if self.fids:
                self.fids[method].update(hq, real=True)
                self.fids[method].update(out, real=False)
            scores[method] = s
        return scores


@torch.no_grad()
def evaluate(
    net: torch.nn.Module,
    dataset,
    *,
    degradation: torch.nn.Module,
    seed: int = 1234,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    lpips_weights: str | None = None,
    lpips_net: str = "alex",
    fid_weights: str | None = None,
    id_weights: str | None = None,
    n_grid: int = 8,
    with_swd: bool = False,
    per_face: dict | None = None,
) -> tuple[dict[str, dict[str, float]], torch.Tensor]:
    """Score ``net`` and the baselines on ``dataset`` (items ``{"hq" uint8, "index"}``).

    Returns ``({method: {metric: mean}}, grid)`` where ``grid`` holds rows
    [LQ | bicubic | GPEN | HQ] for the first ``n_grid`` faces (float, [0, 1]). ``with_swd`` adds
    each method's sliced Wasserstein distance (x 1e3) to the HQ set (it keeps every image).
    ``per_face``: a dict filled with ``{method: {metric: (N,) float64}}``, every face's score of
    the per-image metrics (PSNR, SSIM, LPIPS, identity; FID and SWD score the set).
    """
    device = torch.device(device)
    net = net.to(device).eval()
    scorers = _Scorers.load(
        lpips_weights=lpips_weights,
        lpips_net=lpips_net,
        fid_weights=fid_weights,
        id_weights=id_weights,
        device=device,
    )
    scores_of: dict[str, dict[str, list[torch.Tensor]]] = {m: {} for m in METHODS}
    swds = {m: SlicedWassersteinDistance(seed=seed) for m in METHODS} if with_swd else {}
    count, rows = 0, []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc="evaluate", unit="batch"):
        pair = degrade_fixed(degradation, batch["hq"], batch["index"], seed=seed)
        hq = pair["hq"].float().div(255).to(device)
        lq = pair["lq"].float().div(255).to(device)
        restored = to_unit(net(to_signed(lq)).float().clamp(-1, 1))
        outputs = {"input": lq, "bicubic": _bicubic(lq, pair["params"]["scale"]), "gpen": restored}
        for method, scores in scorers.score(outputs, hq).items():
            for k, v in scores.items():
                scores_of[method].setdefault(k, []).append(v.detach().double().cpu())
        for method, metric in swds.items():
            metric.update(to_signed(hq), real=True)
            metric.update(to_signed(outputs[method]), real=False)
        count += len(hq)
        if sum(len(r) for r in rows) < n_grid:
            rows.append(torch.stack([lq, outputs["bicubic"], restored, hq], 1).cpu())
    if count == 0:
        raise ValueError("the evaluation set is empty")
    faces = {m: {k: torch.cat(v) for k, v in s.items()} for m, s in scores_of.items()}
    if per_face is not None:
        per_face.update(faces)
    table = _table(faces, scorers, swds, count)
    grid = torch.cat(rows)[:n_grid].flatten(0, 1)
    return table, grid


def _table(faces: dict, scorers: _Scorers, swds: dict, count: int) -> dict[str, dict[str, float]]:
    """``{method: {metric: value}}``: the per-face scores' means, then the set metrics."""
    table = {m: {k: float(v.mean()) for k, v in s.items()} for m, s in faces.items()}
    for method, fid in scorers.fids.items():
        table[method]["fid"] = float(fid.compute()) if count > 1 else math.nan
    for method, metric in swds.items():
        table[method]["swd"] = metric.compute()["swd"]
    return table


_HIGHER_BETTER = {"psnr": True, "ssim": True, "lpips": False, "fid": False, "id_deg": False}


def format_table(
    table: dict[str, dict[str, float]], n: int, ci: dict[str, dict[str, list[float]]] | None = None
) -> str:
    """A markdown table: one row per method, one column per metric (arrows: better direction);
    with ``ci``, each cell is ``mean [lo, hi]`` (95 % bootstrap interval) where it has one."""
    metrics = list(next(iter(table.values())))
    better = lambda k: _HIGHER_BETTER.get(k, not k.startswith("swd"))  # noqa: E731
    head = [f"{k} {'↑' if better(k) else '↓'}" for k in metrics]
    lines = [f"| method ({n} faces) | " + " | ".join(head) + " |"]
    lines.append("| --- |" + " --- |" * len(metrics))
    for method, row in table.items():
        bounds = (ci or {}).get(method, {})
        cells = [
            f"{row[k]:.4f}" + (f" [{bounds[k][0]:.4f}, {bounds[k][1]:.4f}]" if k in bounds else "")
            for k in metrics
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_paired(paired: dict[str, dict[str, list[float]]]) -> str:
    """The paired differences (``metrics.bootstrap.paired_table``) as a markdown table."""
    metrics = list(next(iter(paired.values())))
    lines = ["| paired difference (95 % CI) | " + " | ".join(metrics) + " |"]
    lines.append("| --- |" + " --- |" * len(metrics))
    for pair, row in paired.items():
        cells = [f"{row[k][0]:+.4f} [{row[k][1]:+.4f}, {row[k][2]:+.4f}]" for k in metrics]
        lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_per_face(path: Path, per_face: dict[str, dict[str, torch.Tensor]]) -> None:
    """One row per face and method: ``face, method, <metric>...`` (the per-image metrics)."""
    metrics = list(next(iter(per_face.values())))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["face", "method", *metrics])
    for method, scores in per_face.items():
        for i in range(len(scores[metrics[0]])):
            writer.writerow([i, method, *(float(scores[k][i]) for k in metrics)])
    atomic_write(path, lambda p: p.write_text(buf.getvalue()))


@torch.no_grad()
def evaluate_prior(
    prior: Generator,
    dataset,
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    seed: int = 1234,
    n_grid: int = 8,
) -> tuple[dict[str, dict[str, float]], torch.Tensor]:
    """A GAN prior's samples against the faces of ``dataset`` (as many as it holds): the
    multi-scale sliced Wasserstein distance x 1e3. Returns ``({"prior": scores}, grid)``, the
    grid holding ``n_grid`` samples next to ``n_grid`` faces."""
    device = torch.device(device)
    prior = prior.to(device).eval()
    if prior.size != dataset[0]["hq"].shape[-1]:
        raise ValueError(f"the prior is {prior.size} px but the faces are not")
    reals = stack_faces(dataset)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(len(reals), prior.style_dim, generator=gen).to(device)
    fakes = torch.cat([prior(chunk).float().clamp(-1, 1).cpu() for chunk in z.split(batch_size)])
    table = {"prior": swd(reals, fakes, seed=seed)}
    grid = to_unit(torch.cat([fakes[:n_grid], reals[:n_grid]]))
    return table, grid


def describe_network(net: torch.nn.Module) -> str:
    """What was evaluated: the matching preset's architecture, or the GPEN's own dimensions."""
    if isinstance(net, Generator):
        return f"GAN prior, {net.size} px, style {net.style_dim}, {net.n_mlp} mapping layers"
    g = net.generator
    dims = f"GPEN-{net.size}, style {g.style_dim}, {g.n_mlp} mapping layers, noise {g.noise_mode}"
    preset = match_preset(net)
    return f"{dims} (architecture of preset {preset})" if preset else dims


@dataclass(kw_only=True)
class EvaluateStage:
    """``stage=evaluate``: the options of ``conf/evaluate.yaml`` (which documents each and holds
    the defaults), built by ``hydra.utils.instantiate``. ``run`` builds the set, evaluates and
    writes ``report.{md,csv,json}`` and ``grid.png`` to ``output``.

    A GPEN is scored against the baselines; a GAN prior (``weights=prior.pt``) by the sliced
    Wasserstein distance of its samples to the faces. ``degradation`` is the config of the
    ``degradation`` group (instantiated here); ``paths.log_dir`` is where ``weights=latest``
    looks."""

    input: str | None
    output: str
    paths: Mapping
    weights: str | None
    model: str
    degradation: Mapping
    synthetic_length: int
    max_images: int | None
    eval_seed: int
    batch_size: int
    device: str
    lpips_weights: str | None
    lpips_net: str
    fid_weights: str | None
    id_weights: str | None
    swd: bool
    n_grid: int

    def dataset(self, size: int):
        """The HQ faces at ``size`` px: ``input``'s, else procedural ones; ``max_images`` first."""
        if self.input:
            dataset = FaceFolder(self.input, size=size, flip=False)
        else:
            dataset = SyntheticFaces(size=size, length=self.synthetic_length, flip=False)
        if self.max_images:
            dataset = torch.utils.data.Subset(dataset, range(min(self.max_images, len(dataset))))
        return dataset

    def score(
        self, net: torch.nn.Module, dataset, per_face: dict | None = None
    ) -> tuple[dict, torch.Tensor]:
        """``(table, grid)`` of ``net`` (a GPEN or a GAN prior) on ``dataset``; a GPEN's
        per-face scores into ``per_face`` (see ``evaluate``)."""
        device = resolve_device(self.device)
        if isinstance(net, Generator):
            return evaluate_prior(
                net, dataset, batch_size=self.batch_size, device=device, seed=self.eval_seed
            )
        return evaluate(
            net,
            dataset,
            degradation=instantiate(self.degradation),
            seed=self.eval_seed,
            batch_size=self.batch_size,
            device=device,
            lpips_weights=self.lpips_weights,
            lpips_net=self.lpips_net,
            fid_weights=self.fid_weights,
            id_weights=self.id_weights,
            n_grid=self.n_grid,
            with_swd=self.swd,
            per_face=per_face,
        )

    def run(self) -> dict[str, Any]:
        """Evaluate and write the reports; ``{"table", "output"}``."""
        net = load_restoration_model(
            self.weights, model=self.model, runs_root=self.paths["log_dir"], allow_prior=True
        )
        dataset = self.dataset(net.size)
        per_face: dict[str, dict[str, torch.Tensor]] = {}
        table, grid = self.score(net, dataset, per_face)
        meta = {
            "weights": self.weights,
            "network": describe_network(net),
            "input": self.input,
            "faces": len(dataset),
            "seed": self.eval_seed,
            "degradation": dict(self.degradation),
        }
        out = Path(self.output)
        if per_face:  # a GPEN against the baselines: intervals, paired differences, every face
            meta["ci95"] = interval_table(per_face, seed=self.eval_seed)
            meta["paired"] = paired_table(
                per_face, "gpen", ["input", "bicubic"], seed=self.eval_seed
            )
            write_per_face(out / "per_image.csv", per_face)
        write_reports(out, table, meta, grid)
        layout = "prior samples, then faces" if isinstance(net, Generator) else None
        layout = layout or "rows: LQ | bicubic | GPEN | HQ"
        print(f"Reports: {out}/report.md, report.csv, report.json; grid: {out}/grid.png ({layout})")
        return {"table": table, "output": str(out)}


def write_reports(
    out: Path, table: dict[str, dict[str, float]], meta: dict[str, Any], grid: torch.Tensor
) -> None:
    """``report.md`` (printed too), ``report.json`` (``meta`` + metrics), ``report.csv`` and
    ``grid.png`` in ``out``, each written atomically."""
    md = format_table(table, meta["faces"], ci=meta.get("ci95"))
    if meta.get("paired"):
        md += "\n\n" + format_paired(meta["paired"])
    atomic_write(out / "report.md", lambda p: p.write_text(md + "\n"))
    atomic_write(
        out / "report.json",
        lambda p: p.write_text(json.dumps({**meta, "metrics": table}, indent=2)),
    )
    buf = io.StringIO()
    writer = csv.writer(buf)
    metrics = list(next(iter(table.values())))
    writer.writerow(["method", *metrics])
    writer.writerows([m, *(row[k] for k in metrics)] for m, row in table.items())
    atomic_write(out / "report.csv", lambda p: p.write_text(buf.getvalue()))
    atomic_write(
        out / "grid.png", lambda p: save_image(make_grid(grid, nrow=4, padding=2), p, format="png")
    )
    print(md)
