"""Switches of the training fast paths: activation memory format and ``torch.compile``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gpen_lightning.zoo.discriminator import Discriminator
from gpen_lightning.zoo.generator import Generator
from gpen_lightning.zoo.gpen import GPEN

__all__ = ["CompiledPrior", "compiled", "set_memory_format"]


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


class CompiledPrior:
    """A prior ``Generator`` call with its synthesis network compiled.

    The style-mixing crossover is a Python int that changes every minibatch and the number of
    latents is 1 or 2: compiling ``Generator.forward`` would specialise on both and recompile.
    Mapping and mixing stay eager (a small MLP); the synthesis, where the time goes, sees one
    (B, n_latent, D) tensor every call.
    """

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.synthesis = torch.compile(generator.synthesis)

    def __call__(
        self,
        z: torch.Tensor | list[torch.Tensor],
        *,
        inject_index: int | None = None,
        noise: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        return self.synthesis(self.generator.latents(z, inject_index=inject_index), noise)


def compiled(generator: nn.Module, discriminator: nn.Module, *, enabled: bool) -> dict[str, Any]:
    """``{"g_forward", "d_forward"}``: compiled calls of the two networks (sharing their
    parameters) for a loss object's main phases, or ``{}`` when not ``enabled``. A prior
    ``Generator`` gets ``CompiledPrior``; GPEN and D are compiled whole. The compiled callables are
    kept out of the module tree (no duplicate state-dict keys)."""
    if not enabled:
        return {}
    g_forward = (
        CompiledPrior(generator) if isinstance(generator, Generator) else torch.compile(generator)
    )
    return {"g_forward": g_forward, "d_forward": torch.compile(discriminator)}
