"""Where the Hydra configs live, and composing them from Python (tests, notebooks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

__all__ = ["compose", "conf_dir", "register_resolvers"]


def register_resolvers() -> None:
    """``${gpen.auto:KEY,RES,BATCH}``: a value of the resolution- and batch-scaled recipe;
    ``${gpen.global_batch:PER_DEVICE,DEVICES,NODES}``: the batch over all processes
    (``gpen_lightning.recipes``). Idempotent; done on import of this module, which
    every entry point (the CLI, ``compose``) imports before composing."""
    from gpen_lightning.recipes import auto_value, global_batch

    OmegaConf.register_new_resolver("gpen.auto", auto_value, replace=True)
    OmegaConf.register_new_resolver("gpen.global_batch", global_batch, replace=True)


def conf_dir() -> Path:
    """The config tree: inside the installed package (wheel), else the repository's ``conf/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"gpen_lightning's configs were not found next to {here} nor in the source tree; "
        "reinstall the package (pip install gpen-lightning) or run from a repository checkout"
    )


def compose(overrides: Sequence[str] = (), *, return_hydra_config: bool = False) -> DictConfig:
    """Compose the app's config as ``python -m gpen_lightning <overrides>`` would.

    Runtime values (``paths.output_dir``) need the Hydra runtime: pass ``return_hydra_config=True``
    and set ``paths.output_dir=...`` in ``overrides`` when calling ``train`` from Python.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(
            "config", overrides=list(overrides), return_hydra_config=return_hydra_config
        )


register_resolvers()
