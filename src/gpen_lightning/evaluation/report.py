"""The files of an evaluation: ``report.md`` (tables with 95 % intervals and the paired
differences), ``report.json``, ``report.csv``, ``per_image.csv`` and ``grid.png``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import save_image

from gpen_lightning.io import atomic_write
from gpen_lightning.metrics.scorer import HIGHER_BETTER

__all__ = ["format_paired", "format_table", "write_per_face", "write_reports"]

LOWER_BETTER_PREFIXES = ("lpips", "fid", "id_deg", "id_dlib", "lmd", "swd", "niqe")


def _better_up(metric: str) -> bool:
    if metric in HIGHER_BETTER:
        return HIGHER_BETTER[metric]
    if metric.startswith(("psnr", "ssim")):
        return True
    return not metric.startswith(LOWER_BETTER_PREFIXES)


def _cell(metric: str, value: float, bounds: list[float] | None) -> str:
    if metric.endswith("_missing"):
        return f"{value:.0f}"
    return f"{value:.4f}" + (f" [{bounds[0]:.4f}, {bounds[1]:.4f}]" if bounds else "")


def format_table(
    table: dict[str, dict[str, float]], n: int, ci: dict[str, dict[str, list[float]]] | None = None
) -> str:
    """A markdown table: one row per method, one column per metric (arrows: better direction;
    a method without a metric gets "-"); with ``ci``, each cell is ``mean [lo, hi]`` (95 %
    bootstrap interval) where it has one. ``lmd_missing``: faces the detector did not find."""
    metrics = list(dict.fromkeys(k for row in table.values() for k in row))
    head = [
        k if k.endswith("_missing") else f"{k} {'↑' if _better_up(k) else '↓'}" for k in metrics
    ]
    lines = [f"| method ({n} faces) | " + " | ".join(head) + " |"]
    lines.append("| --- |" + " --- |" * len(metrics))
    for method, row in table.items():
        bounds = (ci or {}).get(method, {})
        cells = [_cell(k, row[k], bounds.get(k)) if k in row else "-" for k in metrics]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_paired(paired: dict[str, dict[str, list[float]]]) -> str:
    """The paired differences (``metrics.bootstrap.paired_table``) as a markdown table."""
    metrics = list(dict.fromkeys(k for row in paired.values() for k in row))
    lines = ["| paired difference (95 % CI) | " + " | ".join(metrics) + " |"]
    lines.append("| --- |" + " --- |" * len(metrics))
    for pair, row in paired.items():
        cells = [
            f"{row[k][0]:+.4f} [{row[k][1]:+.4f}, {row[k][2]:+.4f}]" if k in row else "-"
            for k in metrics
        ]
        lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_csv(path: Path, header: list[str], rows: Iterable[list]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, lambda p: p.write_text(buf.getvalue()))


def write_per_face(
    path: Path, per_face: dict[str, dict[str, torch.Tensor]], names: list[str] | None = None
) -> None:
    """One row per face and method: ``face, method, <metric>...`` (the per-image metrics; the
    face's file name when ``names`` is given, else its index; empty: not measured)."""
    metrics = list(dict.fromkeys(k for s in per_face.values() for k in s))
    rows = (
        [names[i] if names else i, method, *(float(s[k][i]) if k in s else "" for k in metrics)]
        for method, s in per_face.items()
        for i in range(len(next(iter(s.values()))))
    )
    _write_csv(path, ["face", "method", *metrics], rows)


def write_reports(
    out: Path,
    table: dict[str, dict[str, float]],
    meta: dict[str, Any],
    grid: torch.Tensor,
    *,
    columns: int = 4,
    legend: str = "",
) -> None:
    """``report.md`` (printed too), ``report.json`` (``meta`` + metrics), ``report.csv`` and
    ``grid.png`` (``columns`` images a row) in ``out``, each written atomically; then the files'
    names are printed, with ``legend`` (what the grid shows)."""
    md = format_table(table, meta["faces"], ci=meta.get("ci95"))
    if meta.get("paired"):
        md += "\n\n" + format_paired(meta["paired"])
    if meta.get("sources"):
        md += "\n\n" + "\n".join(f"- {k}: {v}" for k, v in meta["sources"].items())
    atomic_write(out / "report.md", lambda p: p.write_text(md + "\n"))
    report = json.dumps({**meta, "metrics": table}, indent=2)
    atomic_write(out / "report.json", lambda p: p.write_text(report))
    metrics = list(dict.fromkeys(k for row in table.values() for k in row))
    rows = ([m, *(row.get(k, "") for k in metrics)] for m, row in table.items())
    _write_csv(out / "report.csv", ["method", *metrics], rows)
    if len(grid):
        atomic_write(out / "grid.png", lambda p: save_image(grid, p, nrow=columns, format="png"))
    print(md)
    print(f"Reports: {out}/report.md, report.csv, report.json; grid: {out}/grid.png ({legend})")
