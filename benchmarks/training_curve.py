"""Plot a run's validation curve from its CSV log (``logger=csv``) and print it as a table.

    python benchmarks/training_curve.py RUN_DIR [RUN_DIR ...] --metric val/swd --out curve.png

Each RUN_DIR is a training run's output folder (the one holding ``csv/metrics.csv``); the x axis
is ``progress/kimg`` (the images seen when the metric was logged). Several runs share one plot
(labels: ``--labels``).
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path


def read_curve(run: Path, metric: str) -> list[tuple[float, float]]:
    """(kimg, value) for every row of ``run/csv/metrics.csv`` that logged ``metric``; a row
    without ``progress/kimg`` (validation rows) takes the kimg of the latest training row."""
    path = run / "csv" / "metrics.csv"
    if not path.is_file():
        raise SystemExit(f"{path} not found: pass a run folder trained with logger=csv")
    points, kimg = [], 0.0
    with path.open() as f:
        for row in csv.DictReader(f):
            if row.get("progress/kimg"):
                kimg = float(row["progress/kimg"])
            if row.get(metric):
                points.append((kimg, float(row[metric])))
    if not points:
        raise SystemExit(f"{path} has no {metric!r} values")
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (with csv/metrics.csv)")
    parser.add_argument("--metric", default="val/swd", help="the logged metric to plot")
    parser.add_argument("--labels", nargs="*", help="one label per run (default: folder names)")
    parser.add_argument("--out", type=Path, help="write the plot here (PNG)")
    args = parser.parse_args()
    labels = args.labels or [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit(f"{len(labels)} labels for {len(args.runs)} runs")
    curves = {label: read_curve(run, args.metric) for label, run in zip(labels, args.runs)}
    for label, points in curves.items():
        print(f"| {label} kimg | " + " | ".join(f"{k:.1f}" for k, _ in points) + " |")
        print(f"| {args.metric} | " + " | ".join(f"{v:.1f}" for _, v in points) + " |")
    if args.out:
        os.environ.setdefault("MPLBACKEND", "Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3), dpi=120)
        for label, points in curves.items():
            ax.plot(*zip(*points), marker="o", markersize=3, label=label)
        ax.set_xlabel("kimg (thousands of training images)")
        ax.set_ylabel(args.metric)
        ax.grid(alpha=0.3)
        if len(curves) > 1:
            ax.legend()
        fig.tight_layout()
        fig.savefig(args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
