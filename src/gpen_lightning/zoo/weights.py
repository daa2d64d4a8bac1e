"""Which network restores: ``load_restoration_model`` turns official weights, our exports, a
fine-tuning checkpoint, ``"latest"`` or a preset name into an eval-mode GPEN (restore, evaluate and
export share it; it lives with the zoo, whose builders and checkpoint readers it uses)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from gpen_lightning.io import latest_file
from gpen_lightning.zoo.generator import Generator
from gpen_lightning.zoo.gpen import GPEN
from gpen_lightning.zoo.official import CheckpointMismatchError, load_network
from gpen_lightning.zoo.presets import build

__all__ = ["load_restoration_model"]

log = logging.getLogger(__name__)


def load_restoration_model(
    weights: str | os.PathLike | nn.Module | None,
    *,
    model: str | None = None,
    runs_root: str | os.PathLike = "outputs",
    allow_prior: bool = False,
) -> GPEN | Generator:
    """A GPEN from official weights, our exports (``gpen.pt``, ``*-official.pth``), a fine-tuning
    Lightning checkpoint (its EMA network), ``"latest"`` (the newest ``gpen.pt`` of a
    ``stage=finetune`` run under ``runs_root``), or random weights of preset ``model``. With
    ``allow_prior`` a GAN prior (``prior.pt``, a standalone official generator) is returned too
    (evaluation scores priors); otherwise it is refused."""
    if isinstance(weights, nn.Module):
        return weights
    if weights == "latest":
        found = latest_file(runs_root, "finetune", "gpen.pt")
        if found is None:
            raise FileNotFoundError(
                f"weights=latest found no gpen.pt under {Path(runs_root, 'finetune')}: run "
                "`python -m gpen_lightning stage=finetune` first, or give weights=PATH"
            )
        log.info("weights=latest: %s", found)
        weights = found
    if weights is None:
        if model is None:
            raise ValueError("give weights=PATH (a GPEN .pth / gpen.pt / .ckpt) or a model preset")
        log.warning("no weights given: %s with RANDOM weights (for benchmarks and tests)", model)
        return build(model).eval()
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".ckpt":
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = ckpt.get("state_dict", {})
        ema = {k.removeprefix("g_ema."): v for k, v in state.items() if k.startswith("g_ema.")}
        if not ema:
            raise CheckpointMismatchError(f"{path} is not a stage=finetune checkpoint (no g_ema)")
        net = load_network(ema)
    else:
        net = load_network(path)
    if not isinstance(net, GPEN) and not (allow_prior and isinstance(net, Generator)):
        raise CheckpointMismatchError(
            f"{path} holds a {type(net).__name__}, not a GPEN restoration network (a prior.pt "
            "is the input of stage=finetune; restore with its gpen.pt or an official GPEN-BFR file)"
        )
    return net.eval()
