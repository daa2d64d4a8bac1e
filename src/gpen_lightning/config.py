"""Where the Hydra configs live, and composing them from Python (tests, notebooks)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["ROOTS", "compose", "conf_dir", "options_for", "register_resolvers", "root_config"]

# Each stage's root config (conf/<name>.yaml). The training stages share conf/config.yaml, whose
# `stage` group picks prior or fine-tuning; every other stage composes only what it reads, so an
# override it would ignore is an error from Hydra (or, added with `+`, from the stage object).
ROOTS = {
    "prior": "config",
    "finetune": "config",
    "restore": "restore",
    "evaluate": "evaluate",
    "export": "export",
    "prepare": "prepare",
    "serve": "serve",
}


def register_resolvers() -> None:
    """``${gpen.auto:KEY,RES,BATCH}``: a value of the resolution- and batch-scaled recipe;
    ``${gpen.global_batch:PER_DEVICE,DEVICES,NODES}``: the batch over all processes;
    ``${gpen.preset:NAME,FIELD}``: a field of a zoo preset (``gpen_lightning.recipes``); and the
    stage option configs (``gpen_lightning.options``). Idempotent; done on import of this module,
    which every entry point (the CLI, ``compose``) imports before composing."""
    from gpen_lightning.options import register_configs
    from gpen_lightning.recipes import auto_value, global_batch, preset_value

    OmegaConf.register_new_resolver("gpen.auto", auto_value, replace=True)
    OmegaConf.register_new_resolver("gpen.global_batch", global_batch, replace=True)
    OmegaConf.register_new_resolver("gpen.preset", preset_value, replace=True)
    register_configs()


def options_for(target: Callable, stage: object) -> dict[str, Any]:
    """The attributes of ``stage`` named as the parameters of ``target`` (a dataclass's fields, a
    function's arguments): how a stage object hands its options on, by name, without copies."""
    names = inspect.signature(target).parameters
    return {name: getattr(stage, name) for name in names if hasattr(stage, name)}


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


def root_config(overrides: Sequence[str]) -> str:
    """The root config of the stage the overrides name (``stage=NAME``; default: prior's).
    A sweep over stages (``-m stage=prior,finetune``) must stay within one root config."""
    names = set()
    for arg in overrides:
        if not arg.startswith("stage="):
            continue
        for value in (v.strip() for v in arg.split("=", 1)[1].split(",")):
            if value not in ROOTS:
                raise ValueError(f"unknown stage {value!r}; available: {', '.join(ROOTS)}")
            names.add(ROOTS[value])
    if len(names) > 1:
        raise ValueError(
            f"one sweep cannot mix stages with different configs ({', '.join(sorted(names))}); "
            "run them as separate commands"
        )
    return names.pop() if names else "config"


def compose(overrides: Sequence[str] = (), *, return_hydra_config: bool = False) -> DictConfig:
    """Compose the app's config as ``python -m gpen_lightning <overrides>`` would.

    Runtime values (``paths.output_dir``) need the Hydra runtime: pass ``return_hydra_config=True``
    and set ``paths.output_dir=...`` in ``overrides`` when calling ``train`` from Python.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(
            root_config(overrides),
            overrides=list(overrides),
            return_hydra_config=return_hydra_config,
        )


register_resolvers()
