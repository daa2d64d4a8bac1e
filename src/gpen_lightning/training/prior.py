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
from gpen_lightning.training.base import GANModule, eval_mode
from gpen_lightning.zoo.presets import build

__all__ = ["PriorModule"]


class PriorModule(GANModule):
    """Pre-train the GPEN prior (generator with concatenated noise) against a discriminator.

    Args:
        model: zoo preset, ``{"name": ..., **field overrides}`` (e.g. ``{"name": "gpen-bfr-512"}``).
        lr, betas: Adam settings before the lazy-regularization correction (spec: 0.002, (0, 0.99)).
        r1_gamma, r1_every: R1 weight and interval in minibatches (10, 16); 0 turns it off.
        pl_weight, pl_every, pl_decay, pl_batch_shrink: path-length regularization (2, 4, 0.01, 2);
            weight 0 turns it off.
        mixing_prob: style-mixing probability (0.9).
        stddev_group: minibatch-stddev group of D (None: the whole per-device batch).
        ema_half_life_kimg, ema_rampup: generator EMA half-life in thousands of images (10) and
            the optional ramp-up factor (None: off; StyleGAN2-ADA uses 0.05).
        max_kimg: stop after this many thousand images (counted over all processes).
        n_samples, sample_seed: size and seed of the fixed latents/noise of the sample grids.
        max_nan_streak: stop the run after this many consecutive minibatches with a non-finite loss
            (their steps are skipped); 0 disables the check.
    """

    def __init__(
        self,
        *,
        model: dict[str, Any],
        lr: float = 0.002,
        betas: tuple[float, float] = (0.0, 0.99),
        r1_gamma: float = 10.0,
        r1_every: int = 16,
        pl_weight: float = 2.0,
        pl_every: int = 4,
        pl_decay: float = 0.01,
        pl_batch_shrink: int = 2,
        mixing_prob: float = 0.9,
        stddev_group: int | None = 4,
        ema_half_life_kimg: float = 10.0,
        ema_rampup: float | None = None,
        max_kimg: float = 1.0,
        n_samples: int = 16,
        sample_seed: int = 0,
        max_nan_streak: int = 20,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        model = dict(model)
        name = model.pop("name")
        self.generator = build(name, "prior", **model)
        self.discriminator = build(name, "discriminator", stddev_group=stddev_group, **model)
        self.g_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.r1 = losses.LazyRegularization(r1_every if r1_gamma > 0 else 0, lr, tuple(betas))
        self.pl = losses.LazyRegularization(pl_every if pl_weight > 0 else 0, lr, tuple(betas))

    def configure_optimizers(self):
        g_opt = torch.optim.Adam(self.generator.parameters(), **self.pl.adam_kwargs())
        d_opt = torch.optim.Adam(self.discriminator.parameters(), **self.r1.adam_kwargs())
        return g_opt, d_opt

    def _latents(self, batch: int) -> tuple[list[torch.Tensor], int | None]:
        return losses.mixing_latents(
            batch,
            self.generator.style_dim,
            prob=self.hparams.mixing_prob,
            n_latent=self.generator.n_latent,
            device=self.device,
        )

    # ----------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        g_opt, d_opt = self.optimizers()
        real = batch["hq"]
        b = real.shape[0]
        step = int(self.batches)
        logs: dict[str, torch.Tensor | float] = {}
        ok = True

        # Discriminator: logistic loss on G(z) (detached) and reals.
        self.toggle_optimizer(d_opt)
        zs, cut = self._latents(b)
        with torch.no_grad():
            fake = self.generator(zs, inject_index=cut)
        loss_d = losses.d_logistic_loss(self.discriminator(real), self.discriminator(fake))
        ok &= self._step(d_opt, loss_d, self.discriminator)
        logs["train/loss_d"] = loss_d.detach()
        if self.r1.due(step):
            self._r1_step(real, d_opt, logs)
        self.untoggle_optimizer(d_opt)

        # Generator: non-saturating loss.
        self.toggle_optimizer(g_opt)
        zs, cut = self._latents(b)
        loss_g = losses.g_nonsaturating_loss(
            self.discriminator(self.generator(zs, inject_index=cut))
        )
        ok &= self._step(g_opt, loss_g, self.generator)
        logs["train/loss_g"] = loss_g.detach()
        if self.pl.due(step):
            self._pl_step(lambda: self._generate_for_pl(b), g_opt, self.generator, logs)
        self.untoggle_optimizer(g_opt)
        self._advance(b, ok, self.generator, logs)

    def _generate_for_pl(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        zs, cut = self._latents(max(1, batch // self.hparams.pl_batch_shrink))
        return self.generator(zs, inject_index=cut, return_latents=True)

    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_images(self, n: int | None = None, *, ema: bool = True) -> torch.Tensor:
        """Images from the fixed sample latents and noise: (n, 3, S, S) in [-1, 1], float32."""
        n = n or self.hparams.n_samples
        g = self.g_ema if ema else self.generator
        gen = torch.Generator().manual_seed(self.hparams.sample_seed)
        z = torch.randn(n, g.style_dim, generator=gen).to(self.device)
        noise = [torch.randn(s, generator=gen).to(self.device) for s in g.noise_shapes(n)]
        with eval_mode(g):
            return g(z, noise=noise).float().clamp(-1, 1)

    def export_weights(self, path: str | os.PathLike[str]) -> None:
        """Write the prior for the fine-tuning stage: ``{"g_ema", "g", "d", "meta"}``."""
        self._save_weights(path, "gpen-lightning-prior", self.generator)
