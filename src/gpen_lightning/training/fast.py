"""Switches of the training fast paths: activation memory format and ``torch.compile``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gpen_lightning.zoo.discriminator import Discriminator
from gpen_lightning.zoo.generator import Generator
from gpen_lightning.zoo.gpen import GPEN

__all__ = ["compiled", "set_memory_format"]


def set_memory_format(*nets: nn.Module, channels_last: bool) -> None:
    """Run the activations of zoo networks channels-last (True) or contiguous (False)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for net in nets:
        if isinstance(net, GPEN):
            net = net.generator
        if isinstance(net, Generator | Discriminator):
            net.memory_format = fmt
        else:
            raise TypeError(f"expected a zoo Generator, GPEN or Discriminator, got {type(net)}")


def compiled(generator: nn.Module, discriminator: nn.Module, *, enabled: bool) -> dict[str, Any]:
    """``{"g_forward", "d_forward"}``: ``torch.compile`` of the two networks (sharing their
    parameters) for a loss object's main phases, or ``{}`` when not ``enabled``. The compiled
    callables are kept out of the module tree (no duplicate state-dict keys)."""
    if not enabled:
        return {}
    return {"g_forward": torch.compile(generator), "d_forward": torch.compile(discriminator)}
