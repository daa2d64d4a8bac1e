"""``PriorModule``: stage 1 of GPEN, the StyleGAN2 recipe for the concatenated-noise prior.

The module orchestrates; the objectives live in ``gpen_lightning.losses``. Progress is counted in
images (``images_seen``, kimg), never in ``trainer.global_step``, which Lightning advances once per
optimizer step (two to four per minibatch here).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from typing import Any

import lightning as L
import torch
from torch import nn

from gpen_lightning import losses
from gpen_lightning.io import atomic_save
from gpen_lightning.training.ema import ema_beta, update_ema
from gpen_lightning.training.grads import zero_nonfinite_grads
from gpen_lightning.zoo.presets import build

__all__ = ["PriorModule"]

log = logging.getLogger(__name__)


class PriorModule(L.LightningModule):
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
        self.automatic_optimization = False
        model = dict(model)
        name = model.pop("name")
        self.generator = build(name, "prior", **model)
        self.discriminator = build(name, "discriminator", stddev_group=stddev_group, **model)
        self.g_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.r1 = losses.LazyRegularization(r1_every if r1_gamma > 0 else 0, lr, tuple(betas))
        self.pl = losses.LazyRegularization(pl_every if pl_weight > 0 else 0, lr, tuple(betas))
        # Progress and regularizer state: buffers, so checkpoints restore them exactly.
        for name_ in ("images_seen", "batches", "r1_steps", "pl_steps"):
            self.register_buffer(name_, torch.zeros((), dtype=torch.long))
        for name_ in ("nonfinite_grads", "nonfinite_losses"):
            self.register_buffer(name_, torch.zeros((), dtype=torch.long))
        self.register_buffer("pl_mean", torch.zeros(()))
        self.diverged = False
        self._nan_streak = 0
        self._tick: tuple[float, int] | None = None

    # ----------------------------------------------------------------------------------------
    @property
    def kimg(self) -> float:
        return int(self.images_seen) / 1000.0

    def configure_optimizers(self):
        g_opt = torch.optim.Adam(self.generator.parameters(), **self.pl.adam_kwargs())
        d_opt = torch.optim.Adam(self.discriminator.parameters(), **self.r1.adam_kwargs())
        return g_opt, d_opt

    def _scaler(self) -> torch.amp.GradScaler | None:
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def _latents(self, batch: int) -> tuple[list[torch.Tensor], int | None]:
        return losses.mixing_latents(
            batch,
            self.generator.style_dim,
            prob=self.hparams.mixing_prob,
            n_latent=self.generator.n_latent,
            device=self.device,
        )

    def _finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every process (so all skip or all step together)."""
        ok = bool(torch.isfinite(loss.detach()).all())
        return bool(self.trainer.strategy.reduce_boolean_decision(ok, all=True))

    def _step(self, opt, loss: torch.Tensor, module: nn.Module) -> bool:
        """Backward + step on ``opt`` unless the loss is non-finite; non-finite grads are zeroed."""
        opt.zero_grad(set_to_none=True)
        if not self._finite(loss):
            self.nonfinite_losses += 1
            return False
        self.manual_backward(loss)
        if self._scaler() is None:  # 16-mixed: the GradScaler detects and skips overflows itself
            self.nonfinite_grads += zero_nonfinite_grads(module.parameters())
        opt.step()
        return True

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
            self._pl_step(b, g_opt, logs)
        self.untoggle_optimizer(g_opt)

        # EMA and progress, in images over all processes.
        global_batch = b * self.trainer.world_size
        beta = ema_beta(
            global_batch,
            half_life_kimg=self.hparams.ema_half_life_kimg,
            images_seen=int(self.images_seen),
            rampup=self.hparams.ema_rampup,
        )
        update_ema(self.g_ema, self.generator, beta)
        self.images_seen += global_batch
        self.batches += 1
        self._nan_streak = 0 if ok else self._nan_streak + 1

        now = time.perf_counter()
        if self._tick is not None:
            t0, n0 = self._tick
            logs["perf/img_per_sec"] = (int(self.images_seen) - n0) / max(now - t0, 1e-9)
        self._tick = (now, int(self.images_seen))
        logs["progress/kimg"] = self.kimg
        logs["train/ema_beta"] = beta
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=b)
        self.log_dict(
            {"kimg": self.kimg, "d": logs["train/loss_d"], "g": logs["train/loss_g"]},
            prog_bar=True,
            logger=False,
            batch_size=b,
        )

    def _r1_step(self, real: torch.Tensor, d_opt, logs: dict) -> None:
        """Lazy R1 on reals, weighted gamma/2 * interval."""

        def compute(scaler):
            real_ = real.detach().requires_grad_(True)
            logits = self.discriminator(real_)
            r1 = losses.r1_penalty(logits, real_, scaler=scaler)
            return self.hparams.r1_gamma / 2 * r1 * self.r1.interval + 0 * logits.sum(), r1

        loss, r1 = self._penalty(compute)
        if self._step(d_opt, loss, self.discriminator):
            self.r1_steps += 1
        logs["train/r1"] = r1.detach()

    def _pl_step(self, batch: int, g_opt, logs: dict) -> None:
        """Lazy path-length regularization on a shrunk batch, weighted w * interval."""
        pb = max(1, batch // self.hparams.pl_batch_shrink)

        def compute(scaler):
            zs, cut = self._latents(pb)
            images, latents = self.generator(zs, inject_index=cut, return_latents=True)
            penalty, lengths, new_mean = losses.path_length_penalty(
                images,
                latents,
                self.pl_mean,
                decay=self.hparams.pl_decay,
                scaler=scaler,
                reduce_mean=lambda x: self.trainer.strategy.reduce(x, reduce_op="mean"),
            )
            loss = self.hparams.pl_weight * self.pl.interval * penalty + 0 * images.sum()
            return loss, (penalty, lengths, new_mean)

        loss, (penalty, lengths, new_mean) = self._penalty(compute)
        if self._step(g_opt, loss, self.generator):
            self.pl_mean.copy_(new_mean)
            self.pl_steps += 1
        logs["train/pl_penalty"] = penalty.detach()
        logs["train/path_length"] = lengths.mean()

    def _penalty(self, compute):
        """``compute(scaler) -> (loss, aux)``. Under ``16-mixed`` the inner gradient of a penalty
        is taken on the scaled output and can overflow fp16: then back the scale off (as the
        GradScaler does after an overflowing step) and recompute, up to 16 times."""
        scaler = self._scaler()
        for _ in range(16):
            loss, aux = compute(scaler)
            if scaler is None or not scaler.is_enabled() or self._finite(loss):
                break
            scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
        return loss, aux

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        limit = self.hparams.max_nan_streak
        if limit and self._nan_streak >= limit:
            self.diverged = True
            self.trainer.should_stop = True
            log.error(
                "stopping: %d consecutive minibatches had a non-finite loss (their steps were "
                "skipped); the last checkpoint written before this point is kept. Lower the "
                "learning rate or try trainer.precision=32-true.",
                self._nan_streak,
            )
        if self.images_seen >= self.hparams.max_kimg * 1000:
            self.trainer.should_stop = True

    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_images(self, n: int | None = None, *, ema: bool = True) -> torch.Tensor:
        """Images from the fixed sample latents and noise: (n, 3, S, S) in [-1, 1], float32."""
        n = n or self.hparams.n_samples
        g = self.g_ema if ema else self.generator
        gen = torch.Generator().manual_seed(self.hparams.sample_seed)
        z = torch.randn(n, g.style_dim, generator=gen).to(self.device)
        noise = [torch.randn(s, generator=gen).to(self.device) for s in g.noise_shapes(n)]
        was_training = g.training
        g.eval()
        images = g(z, noise=noise).float().clamp(-1, 1)
        g.train(was_training)
        return images

    def export_weights(self, path: str | os.PathLike[str]) -> None:
        """Write the prior for the fine-tuning stage: ``{"g_ema", "g", "d", "meta"}``.

        The layout of an official training checkpoint (``load_official(path)`` returns the EMA
        generator, ``part="discriminator"`` the D); plain tensors, loadable with
        ``weights_only=True``.
        """
        cpu = lambda m: {k: v.detach().cpu() for k, v in m.state_dict().items()}  # noqa: E731
        meta = {
            "format": "gpen-lightning-prior",
            "model": dict(self.hparams.model),
            "kimg": self.kimg,
            "images_seen": int(self.images_seen),
        }
        g_ema, g, d = cpu(self.g_ema), cpu(self.generator), cpu(self.discriminator)
        atomic_save({"g_ema": g_ema, "g": g, "d": d, "meta": meta}, path)
