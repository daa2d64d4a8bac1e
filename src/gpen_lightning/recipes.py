"""Training recipes scaled to the resolution and batch, as StyleGAN2-ADA's ``auto`` configuration
(Karras et al. 2020, ``train.py --cfg=auto``):

- R1 gamma = 0.0002 * res^2 / batch (the penalty's effect scales with the pixels and the batch);
- generator EMA half-life = batch * 10 / 32 thousand images (10 kimg at batch 32);
- learning rate 0.0025 below 1024 px, 0.002 from 1024 px;
- minibatch-stddev group min(batch, 4).

``batch`` is the global batch (per device x devices). The model presets keep their own recipe
(``conf/model/base/``; ``recipe=auto`` swaps in this one). In the configs,
``${gpen.auto:r1_gamma,${model.size},${model.recipe.global_batch}}`` reads a value, and
``${gpen.preset:${model.name},size}`` a field of the zoo preset (the size of every model config).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

__all__ = [
    "AUTO_KEYS",
    "auto_recipe",
    "auto_value",
    "global_batch",
    "preset_value",
]

AutoKey = Literal["r1_gamma", "ema_half_life_kimg", "lr", "stddev_group"]
AUTO_KEYS: tuple[AutoKey, ...] = ("r1_gamma", "ema_half_life_kimg", "lr", "stddev_group")


def auto_recipe(resolution: int, batch: int) -> dict[str, float | int]:
    """The scaled hyper-parameters for ``resolution`` px and a global ``batch``."""
    if resolution < 4 or batch < 1:
        raise ValueError(f"need resolution >= 4 and batch >= 1, got {resolution}, {batch}")
    return {
        "r1_gamma": 0.0002 * resolution**2 / batch,
        "ema_half_life_kimg": batch * 10 / 32,
        "lr": 0.002 if resolution >= 1024 else 0.0025,
        "stddev_group": min(batch, 4),
    }


def auto_value(key: str, resolution: int | str, batch: int | str) -> float | int:
    """One value of ``auto_recipe`` (the ``gpen.auto`` config resolver)."""
    if key not in AUTO_KEYS:
        raise KeyError(f"unknown auto-recipe key {key!r}; available: {', '.join(AUTO_KEYS)}")
    return auto_recipe(int(resolution), int(batch))[key]


def global_batch(per_device: int | str, devices: int | str | list, nodes: int | str = 1) -> int:
    """Images per optimizer step over all processes: ``per_device x devices x nodes``. Device
    counts Lightning resolves at run time (``-1``, ``"auto"``, a device list) count what they
    name when that is known here (a list), else 1 (the recipe then scales with the per-device
    batch; give ``trainer.devices=N`` to scale it with the global one)."""
    if isinstance(devices, list | tuple):
        n = len(devices)
    else:
        try:
            n = max(int(devices), 1)
        except (TypeError, ValueError):
            n = 1
    return int(per_device) * n * max(int(nodes or 1), 1)


def preset_value(name: str, field: str) -> Any:
    """A field of the zoo preset ``name`` (``size``, ``noise_mode``, ...): the ``gpen.preset``
    config resolver. It imports the zoo (torch) when a value is resolved, never on compose."""
    from gpen_lightning.zoo.presets import Preset, get_preset

    known = [f.name for f in dataclasses.fields(Preset)]
    if field not in known:
        raise KeyError(f"unknown preset field {field!r}; available: {', '.join(known)}")
    return getattr(get_preset(name), field)
