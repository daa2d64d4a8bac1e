"""``stage=restore``: restore every image and video a spec names, in this process or, with several
devices or nodes, split over processes by Lightning (``restore.distributed``)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from gpen_lightning.restore.batch import (
    RestoreRun,
    collect_inputs,
    make_restorer,
    refuse_output_in_inputs,
)
from gpen_lightning.restore.distributed import predict_files

__all__ = ["restore_files"]


def restore_files(cfg: DictConfig) -> int:
    """Run the restore stage; return the exit status (0: every file restored, 1: some failed)."""
    files, root = collect_inputs(str(cfg.input))
    out_dir = Path(cfg.output or cfg.paths.output_dir).expanduser()
    refuse_output_in_inputs(out_dir, files, root, cfg.suffix or "")
    if not files:
        print(f"No images or videos found under {cfg.input}.")
        return 1
    if _distributed(cfg):
        report = predict_files(cfg, files, root, out_dir)
        if report is None:  # not the global rank 0: it printed nothing
            return 0
    else:
        run = RestoreRun(cfg, make_restorer(cfg), files, root, out_dir)
        report = run.run()
    print(report.summary())
    print(f"Outputs in {out_dir}")
    return 1 if report.failed else 0


def _distributed(cfg: DictConfig) -> bool:
    """More than one process: ``trainer.devices`` other than 1, or several nodes."""
    trainer = cfg.get("trainer") or {}
    devices = trainer.get("devices", 1)
    return str(devices) not in ("1", "None") or int(trainer.get("num_nodes", 1) or 1) > 1
