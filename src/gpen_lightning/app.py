"""The Hydra application behind ``python -m gpen_lightning``: compose, then run the stage."""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from gpen_lightning.config import conf_dir
from gpen_lightning.runtime import use_cpu_huge_pages

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


# What the non-training stages never read, and where their equivalent lives: an override of one of
# these would be silently ignored, so it is refused.
_NOT_READ = {
    "trainer": "it runs in this process; choose the device with device=cpu|cuda",
    "logger": "it logs nothing; its reports are written to output=",
    "callbacks": "it trains nothing",
    "module": "the network comes from weights=PATH (or the `model` preset with random weights)",
    "ckpt_path": "give the checkpoint as weights=PATH",
    "data": "its inputs are input=PATH",
}
_UNUSED = {
    "restore": {
        **_NOT_READ,
        "trainer": "only trainer=<group>, trainer.devices, trainer.num_nodes, "
        "trainer.accelerator and trainer.strategy are read (they split the files over processes)",
        "degradation": "it degrades nothing (real photos)",
    },
    "export": {**_NOT_READ, "degradation": "it degrades nothing", "data": "it reads no data"},
    "evaluate": {
        **_NOT_READ,
        "data": "stage=evaluate reads input=FACES (a folder of aligned HQ faces), not data.*",
    },
}


# Overrides under an unused root that a stage does read.
_READ = {
    "restore": {
        "trainer",
        "trainer.devices",
        "trainer.num_nodes",
        "trainer.accelerator",
        "trainer.strategy",
    },
}


def refuse_unused_overrides(stage: str, overrides: list[str]) -> None:
    """Raise ``ValueError`` naming the key a stage wants when an override sets something the
    stage never reads (e.g. ``data.root=`` on ``stage=evaluate``, which reads ``input=``)."""
    unused = _UNUSED.get(stage, {})
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in _READ.get(stage, ()):
            continue
        root = key.split(".", 1)[0].split("@", 1)[0]
        if root in unused:
            raise ValueError(
                f"stage={stage} does not use `{override}`: {unused[root]}. "
                "Remove the override (see python -m gpen_lightning --help)."
            )


def run(cfg: DictConfig) -> Any:
    """Dispatch on ``task_name`` (set by the ``stage`` config)."""
    use_cpu_huge_pages(cfg.get("cpu_huge_pages", True))  # before torch is imported
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
    from hydra.core.hydra_config import HydraConfig

    refuse_unused_overrides(cfg.task_name, list(HydraConfig.get().overrides.task))
    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
