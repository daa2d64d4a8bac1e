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
from gpen_lightning.training.base import GANModule, eval_mode
from gpen_lightning.training.fast import compiled, set_memory_format
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
        log_every, check_every: log scalars / read the NaN streak back every this many
            minibatches (the steps in between never wait for the device).
        compile: ``torch.compile`` G and D for the main phases (the regularization phases, which
            take double backward, run the eager modules).
        channels_last: run the networks' activations channels-last (faster convolutions on CPU
            and CUDA); False runs them contiguous.
        fused_adam: fused Adam kernels; None picks them on CUDA.
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
        log_every: int = 10,
        check_every: int = 10,
        compile: bool = False,
        channels_last: bool = True,
        fused_adam: bool | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        model = dict(model)
        name = model.pop("name")
        self.generator = build(name, "prior", **model)
        self.discriminator = build(name, "discriminator", stddev_group=stddev_group, **model)
        set_memory_format(self.generator, self.discriminator, channels_last=channels_last)
        self.g_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.trained_generator = self.generator
        self.loss = PriorLoss(
            generator=self.generator,
            discriminator=self.discriminator,
            regularization=self.regularization(),
            mixing_prob=mixing_prob,
            **compiled(self.generator, self.discriminator, enabled=compile),
        )
        self.r1 = losses.LazyRegularization(self.loss.r1_every, lr, tuple(betas))
        self.pl = losses.LazyRegularization(self.loss.pl_every, lr, tuple(betas))

    def configure_optimizers(self):
        g_opt = self._adam(self.generator.parameters(), **self.pl.adam_kwargs())
        d_opt = self._adam(self.discriminator.parameters(), **self.r1.adam_kwargs())
        return g_opt, d_opt

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
                maps = None if noise is None else [m[i : i + 64].to(self.device) for m in noise]
                out.append(g(z[i : i + 64].to(self.device), noise=maps).float().clamp(-1, 1))
        return torch.cat(out)

    def export_weights(self, path: str | os.PathLike[str]) -> None:
        """Write the prior for the fine-tuning stage: ``{"g_ema", "g", "d", "meta"}``."""
        self._save_weights(path, "gpen-lightning-prior", self.generator)
