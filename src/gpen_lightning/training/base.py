"""``GANModule``: what both training stages share under manual optimization.

Progress in images (``images_seen``; kimg), never ``trainer.global_step`` (which Lightning advances
once per optimizer step); NaN-safe steps; lazy R1; the fp16 retry of gradient penalties; generator
EMA; throughput logging; the stop conditions (``max_kimg``, repeated non-finite losses).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch import nn

from gpen_lightning import losses
from gpen_lightning.io import atomic_save
from gpen_lightning.training.ema import ema_beta, update_ema
from gpen_lightning.training.grads import zero_nonfinite_grads

__all__ = ["GANModule", "eval_mode"]

log = logging.getLogger(__name__)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` in eval mode inside the block, restoring its previous mode after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


class GANModule(L.LightningModule):
    """Base of ``PriorModule`` and ``FinetuneModule``; subclasses set ``self.discriminator``,
    ``self.g_ema`` and ``self.r1`` (a ``losses.LazyRegularization``) and read ``hparams``
    ``r1_gamma``, ``max_kimg``, ``max_nan_streak``, ``ema_half_life_kimg``, ``ema_rampup``."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        # Progress and regularizer state: buffers, so checkpoints restore them exactly.
        for name in ("images_seen", "batches", "r1_steps", "pl_steps"):
            self.register_buffer(name, torch.zeros((), dtype=torch.long))
        for name in ("nonfinite_grads", "nonfinite_losses"):
            self.register_buffer(name, torch.zeros((), dtype=torch.long))
        self.register_buffer("pl_mean", torch.zeros(()))
        self.diverged = False
        self._nan_streak = 0
        self._tick: tuple[float, int] | None = None

    @property
    def kimg(self) -> float:
        return int(self.images_seen) / 1000.0

    def _scaler(self) -> torch.amp.GradScaler | None:
        return getattr(self.trainer.precision_plugin, "scaler", None)

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

    def _penalty(self, compute: Callable[[Any], tuple[torch.Tensor, Any]]):
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

    def _pl_step(
        self, generate: Callable[[], tuple[torch.Tensor, torch.Tensor]], g_opt, model, logs: dict
    ) -> None:
        """Lazy path-length regularization, weighted w * interval; ``generate()`` returns images
        and the per-layer latents they were synthesised from (on a shrunk batch)."""

        def compute(scaler):
            images, latents = generate()
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
        if self._step(g_opt, loss, model):
            self.pl_mean.copy_(new_mean)
            self.pl_steps += 1
        logs["train/pl_penalty"] = penalty.detach()
        logs["train/path_length"] = lengths.mean()

    def _save_weights(self, path, fmt: str, trained: nn.Module) -> None:
        """``{"g_ema", "g", "d", "meta"}`` on CPU, atomically: the layout of an official training
        checkpoint, so ``load_official(path)`` returns the EMA network (``part="discriminator"``
        the D); plain tensors, loadable with ``weights_only=True``."""
        cpu = lambda m: {k: v.detach().cpu() for k, v in m.state_dict().items()}  # noqa: E731
        meta = {
            "format": fmt,
            "model": dict(self.hparams.model),
            "kimg": self.kimg,
            "images_seen": int(self.images_seen),
        }
        state = {"g_ema": cpu(self.g_ema), "g": cpu(trained), "d": cpu(self.discriminator)}
        atomic_save({**state, "meta": meta}, path)

    def _advance(self, batch: int, ok: bool, model: nn.Module, logs: dict) -> None:
        """After a minibatch: EMA of ``model`` into ``g_ema``, image count, NaN streak, logs."""
        global_batch = batch * self.trainer.world_size
        beta = ema_beta(
            global_batch,
            half_life_kimg=self.hparams.ema_half_life_kimg,
            images_seen=int(self.images_seen),
            rampup=self.hparams.ema_rampup,
        )
        update_ema(self.g_ema, model, beta)
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
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=batch)
        self.log_dict(
            {"kimg": self.kimg, "d": logs["train/loss_d"], "g": logs["train/loss_g"]},
            prog_bar=True,
            logger=False,
            batch_size=batch,
        )

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
