"""The Hydra application behind ``python -m gpen_lightning``: compose, then run the stage."""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from gpen_lightning.config import conf_dir, root_config
from gpen_lightning.runtime import use_cpu_huge_pages

__all__ = ["build_stage", "main", "run"]

log = logging.getLogger(__name__)


def _single_log_stream() -> None:
    """Lightning adds its own console handler; Hydra already logs the root logger to the console
    and to <run>/<job>.log. Route Lightning through Hydra's handlers so each line appears once."""
    import lightning  # noqa: F401  (its handlers are attached on import)

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("lightning")]:
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True


# Root keys the app reads itself; the rest of a stage's root config are the stage's arguments.
APP_KEYS = ("task_name", "cpu_huge_pages")


def build_stage(cfg: DictConfig) -> Any:
    """The stage object of a composed non-training config (its ``_target_``), built by
    ``instantiate`` from every root key but the app's (``APP_KEYS``). ``output=null`` becomes the
    run folder (``paths.output_dir``, Hydra's runtime); a given ``output`` is the run folder. Of
    the ``model`` group the stage takes the preset's name (the recipe is for training)."""
    node = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in APP_KEYS])
    with open_dict(node):
        if OmegaConf.is_dict(node.get("model")):
            node.model = node.model.name
        if node.get("output") is None:
            node.output = node.paths.output_dir
        else:
            node.paths.output_dir = node.output
    return instantiate(node, _recursive_=False, _convert_="all")


def run(cfg: DictConfig) -> Any:
    """Run the composed stage: training configs go to ``train(cfg)``, the others are built as
    objects (``build_stage``) and run."""
    use_cpu_huge_pages(cfg.get("cpu_huge_pages", True))  # before torch is imported
    _single_log_stream()
    if "_target_" not in cfg:
        from gpen_lightning.train import objective, train

        result = train(cfg)
        metric = cfg.get("optimized_metric")
        if metric:  # a sweep's objective (a diverged run raises TrialFailed: a failed job)
            return objective(result, metric)
        if result["diverged"] and not _multirun():  # a sweep goes on (its job logged the error)
            raise SystemExit(
                "training stopped because the losses kept being non-finite; the last good "
                f"checkpoint is in {result['output_dir']}/checkpoints"
            )
        return result
    result = build_stage(cfg).run()
    if isinstance(result, int) and result:  # an exit status (restore: some file failed)
        raise SystemExit(result)
    return result


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def main() -> Any:
    """``python -m gpen_lightning [stage=NAME] [overrides]``: compose the stage's root config
    with Hydra (``--help``, ``--cfg job``, ``-m`` work per stage) and run it."""
    try:
        name = root_config(sys.argv[1:])
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    app = hydra.main(config_path=str(conf_dir()), config_name=name, version_base="1.3")(run)
    return app()


if __name__ == "__main__":
    sys.exit(main())
