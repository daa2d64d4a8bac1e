"""The paper's ablations as one report: ``hparams_search=ablation`` fine-tunes full GPEN, a frozen
prior, additive noise and no noise on the same data and budget; when the sweep ends,
``AblationReport`` scores every job's EMA network on the same seeded degraded validation faces
with the evaluation's scorer (PSNR, SSIM and the sliced Wasserstein distance of the outputs to
the HQ faces, next to the degraded input and bicubic upsampling; each per-image cell with its
95 % bootstrap interval) and writes ``ablation.md``, ``ablation.json`` and
``ablation.png`` (rows: LQ | each variant | HQ) into the sweep folder.

``python -m gpen_lightning.ablation SWEEP_DIR`` writes the report of a finished sweep again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Subset
from torchvision.utils import save_image

from gpen_lightning.evaluate import evaluate, format_table
from gpen_lightning.io import atomic_write
from gpen_lightning.metrics.bootstrap import interval_table
from gpen_lightning.zoo.official import load_network

__all__ = ["AblationReport", "ablation_report", "find_jobs"]


def find_jobs(sweep_dir: str | Path) -> list[tuple[str, Path]]:
    """``(label, job folder)`` of every finished fine-tuning job of a sweep (it wrote ``gpen.pt``),
    in job order. The label is the job's ``ablation`` option, else its overrides."""
    jobs = []
    for cfg_file in Path(sweep_dir).glob("*/.hydra/config.yaml"):
        job = cfg_file.parent.parent
        if not (job / "gpen.pt").is_file():
            continue
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        picked = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("ablation=")]
        jobs.append((picked[0] if picked else " ".join(overrides) or job.name, job))
    return sorted(jobs, key=lambda item: int(item[1].name) if item[1].name.isdigit() else 0)


def ablation_report(
    sweep_dir: str | Path, *, faces: int = 64, n_grid: int = 6, seed: int = 1234
) -> dict[str, Any]:
    """Score the sweep's jobs and write ``ablation.{md,json,png}`` into ``sweep_dir``.

    Returns ``{"table": {row: {metric: value}}, "markdown": str, "files": [...]}``; rows are
    ``input``, ``bicubic`` and one per job label.
    """
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(
            f"no finished fine-tuning job (a folder with gpen.pt) under {sweep_dir}"
        )
    table: dict[str, dict[str, float]] = {}
    per_face: dict[str, dict[str, torch.Tensor]] = {}
    columns, n = [], 0
    for label, job in jobs:
        # the job's validation split (the faces its training never saw), first `faces`
        dm = instantiate(OmegaConf.load(job / ".hydra" / "config.yaml").data, _convert_="all")
        dm.setup("validate")
        dataset = Subset(dm.val_set, range(min(faces, len(dm.val_set))))
        job_faces: dict[str, dict[str, torch.Tensor]] = {}
        scores, grid = evaluate(
            load_network(job / "gpen.pt"),
            dataset,
            degradation=dm.val_degradation,
            seed=seed,
            n_grid=n_grid,
            with_swd=True,
            per_face=job_faces,
        )
        rows = grid.unflatten(0, (-1, 4))  # (faces, [LQ, bicubic, GPEN, HQ], 3, S, S)
        if not table:  # the baselines see the same seeded faces in every job
            table.update(input=scores["input"], bicubic=scores["bicubic"])
            per_face.update(input=job_faces["input"], bicubic=job_faces["bicubic"])
            columns = [rows[:, 0], rows[:, 3]]
            n = len(dataset)
        table[label] = scores["gpen"]
        per_face[label] = job_faces["gpen"]
        columns.insert(-1, rows[:, 2])
    ci = interval_table(per_face, seed=seed)
    markdown = format_table(table, n, ci=ci)
    picture = torch.stack(columns, 1).flatten(0, 1)
    files = [sweep_dir / f"ablation.{ext}" for ext in ("md", "json", "png")]
    atomic_write(files[0], lambda p: p.write_text(markdown + "\n"))
    meta = {"faces": n, "seed": seed, "jobs": {label: str(job) for label, job in jobs}, "ci95": ci}
    atomic_write(files[1], lambda p: p.write_text(json.dumps({**meta, "metrics": table}, indent=2)))
    atomic_write(files[2], lambda p: save_image(picture, p, nrow=len(columns), format="png"))
    print(markdown)
    print(f"grid: {files[2]} (rows: LQ | {' | '.join(label for label, _ in jobs)} | HQ)")
    return {"table": table, "markdown": markdown, "files": [str(f) for f in files]}


class AblationReport(Callback):
    """Hydra callback: ``ablation_report`` on the sweep folder when a multirun ends.

    Args:
        faces: validation faces scored per job.
        n_grid: faces (rows) in ``ablation.png``.
        seed: seeds the degradation of the scored faces.
    """

    def __init__(self, *, faces: int = 64, n_grid: int = 6, seed: int = 1234) -> None:
        self.faces, self.n_grid, self.seed = faces, n_grid, seed

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        ablation_report(
            config.hydra.sweep.dir, faces=self.faces, n_grid=self.n_grid, seed=self.seed
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="the multirun folder of hparams_search=ablation")
    parser.add_argument("--faces", type=int, default=64)
    parser.add_argument("--n-grid", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    ablation_report(args.sweep_dir, faces=args.faces, n_grid=args.n_grid, seed=args.seed)


if __name__ == "__main__":
    main()
