"""``PhaseDDPStrategy``: data parallelism for GAN phases, one gradient all-reduce per phase.

Lightning's ``DDPStrategy`` wraps the LightningModule in ``DistributedDataParallel``. Under manual
optimization each of the 2-4 backward passes of a GAN minibatch then all-reduces every bucket of
G and D, and with ``find_unused_parameters`` also walks the autograd graph to mark the network
the phase does not train: a D phase sends G's gradients (zeros) along with D's. This strategy
keeps Lightning's process launch, samplers, reductions and checkpointing but leaves the module
unwrapped; ``GANModule`` averages the gradients of the network each phase trains itself, in one
flat all-reduce per dtype (``sanitize_grads(average=True)``), as StyleGAN2-ADA/3 do.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

__all__ = ["PhaseDDPStrategy", "broadcast_module"]


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Every parameter and buffer of ``module`` from process ``src`` to the others (what the
    ``DistributedDataParallel`` constructor does): all processes start from the same weights."""
    for tensor in (*module.parameters(), *module.buffers()):
        dist.broadcast(tensor.data, src)


class PhaseDDPStrategy(DDPStrategy):
    """``DDPStrategy`` without the ``DistributedDataParallel`` wrapper (see the module docs). Only
    for modules that average their own gradients, such as ``GANModule``."""

    strategy_name = "gpen_phase_ddp"

    def configure_ddp(self) -> None:
        broadcast_module(self.model)
