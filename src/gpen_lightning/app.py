"""The Hydra application behind ``python -m gpen_lightning``: compose, then run the stage."""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from gpen_lightning.config import conf_dir

__all__ = ["main", "run"]

log = logging.getLogger(__name__)

TRAINING_STAGES = ("prior", "finetune")


def _single_log_stream() -> None:
    """Lightning adds its own console handler; Hydra already logs the root logger to the console
    and to <run>/<job>.log. Route Lightning through Hydra's handlers so each line appears once."""
    import lightning  # noqa: F401  (its handlers are attached on import)

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("lightning")]:
        lg = logging.getLogger(name)
        for handler in list(lg.handlers):
            lg.removeHandler(handler)
        lg.propagate = True


def run(cfg: DictConfig) -> Any:
    """Dispatch on ``task_name`` (set by the ``stage`` config)."""
    _single_log_stream()
    stage = cfg.task_name
    if stage in TRAINING_STAGES:
        from gpen_lightning.train import train

        result = train(cfg)
        if result["diverged"]:
            raise SystemExit(
                "training stopped because the losses kept being non-finite; the last good "
                f"checkpoint is in {result['output_dir']}/checkpoints"
            )
        return result
    if stage == "restore":
        from gpen_lightning.restore.cli import restore_files

        status = restore_files(cfg)
        if status:
            raise SystemExit(status)
        return status
    if stage == "export":
        from gpen_lightning.export import run_export

        return run_export(cfg)
    if stage == "evaluate":
        from gpen_lightning.evaluate import run_evaluate

        return run_evaluate(cfg)
    stages = ", ".join((*TRAINING_STAGES, "restore", "export", "evaluate"))
    raise ValueError(f"unknown stage {stage!r}; available: {stages}")


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> Any:
    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
