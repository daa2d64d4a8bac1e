"""``PriorModule``: stage 1 of GPEN, the StyleGAN2 recipe for the concatenated-noise prior.

The module orchestrates; the objectives live in ``gpen_lightning.losses``. Progress is counted in
images (``images_seen``, kimg), never in ``trainer.global_step``, which Lightning advances once per
optimizer step (two to four per minibatch here).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch

from gpen_lightning import losses
from gpen_lightning.losses.phases import PriorLoss
from gpen_lightning.options import PriorOptions
from gpen_lightning.training.base import GANModule, eval_mode
from gpen_lightning.training.fast import compiled, set_memory_format
from gpen_lightning.zoo.presets import build

__all__ = ["PriorModule"]


class PriorModule(GANModule):
    """Pre-train the GPEN prior (generator with concatenated noise) against a discriminator.

    Args:
        model: zoo preset, ``{"name": ..., **field overrides}`` (e.g. ``{"name": "gpen-bfr-512"}``).
        **options: the fields of ``gpen_lightning.options.PriorOptions`` (documented there; the
            stage config ``stage=prior`` starts from the same defaults): Adam, R1, path length,
            style mixing, EMA, stop conditions, sample grids, speed switches.
    """

    def __init__(self, *, model: dict[str, Any], **options: Any) -> None:
        super().__init__()
        opts = PriorOptions(**options)
        self.save_hyperparameters({"model": model, **opts.as_dict()})
        arch = dict(model)
        name = arch.pop("name")
        self.generator = build(name, "prior", **arch)
        self.discriminator = build(name, "discriminator", stddev_group=opts.stddev_group, **arch)
        set_memory_format(self.generator, self.discriminator, channels_last=opts.channels_last)
        self.g_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.loss = PriorLoss(
            generator=self.generator,
            discriminator=self.discriminator,
            regularization=self.regularization(),
            mixing_prob=opts.mixing_prob,
            **compiled(self.generator, self.discriminator, enabled=opts.compile),
        )
        self.r1 = losses.LazyRegularization(self.loss.r1_every, opts.lr, tuple(opts.betas))
        self.pl = losses.LazyRegularization(self.loss.pl_every, opts.lr, tuple(opts.betas))

    def configure_optimizers(self):
        g_opt = self._adam(self.generator.parameters(), **self.pl.adam_kwargs())
        d_opt = self._adam(self.discriminator.parameters(), **self.r1.adam_kwargs())
        return g_opt, d_opt

    @property
    def trained_generator(self) -> torch.nn.Module:
        """The network G's optimizer trains: the prior generator."""
        return self.generator

    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_images(self, n: int | None = None, *, ema: bool = True) -> torch.Tensor:
        """Images from the fixed sample latents and noise: (n, 3, S, S) in [-1, 1], float32."""
        n = n or self.hparams.n_samples
        g = self.g_ema if ema else self.generator
        return self._generate(g, n, seed=self.hparams.sample_seed, fixed_noise=True)

    @torch.no_grad()
    def swd_samples(self, n: int) -> torch.Tensor:
        """``n`` EMA samples for the SWD monitor: fixed latents (seeded by ``sample_seed + 1``),
        fresh noise; (n, 3, S, S) in [-1, 1]."""
        return self._generate(self.g_ema, n, seed=self.hparams.sample_seed + 1, fixed_noise=False)

    def _generate(self, g, n: int, *, seed: int, fixed_noise: bool) -> torch.Tensor:
        """``n`` images of ``g`` in eval mode from latents (and, if ``fixed_noise``, noise maps)
        drawn on the CPU from ``seed``, 64 at a time: (n, 3, S, S) in [-1, 1], float32."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, g.style_dim, generator=gen)
        noise = [torch.randn(s, generator=gen) for s in g.noise_shapes(n)] if fixed_noise else None
        out = []
        with eval_mode(g):
            for i in range(0, n, 64):
                to = dict(device=self.device, dtype=g.w_avg.dtype)  # 64-true: float64
                maps = None if noise is None else [m[i : i + 64].to(**to) for m in noise]
                out.append(g(z[i : i + 64].to(**to), noise=maps).float().clamp(-1, 1))
        return torch.cat(out)

    def export_weights(self, path: str | os.PathLike[str]) -> None:
        """Write the prior for the fine-tuning stage: ``{"g_ema", "g", "d", "meta"}``."""
        self._save_weights(path, "gpen-lightning-prior")
