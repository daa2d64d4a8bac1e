"""``GANModule``: the training step both stages share under manual optimization.

The step runs the module's phase records (``TrainingPhase``: ``Dmain``, ``Dreg``, ``Gmain``,
``Greg``, built once from the loss object of ``gpen_lightning.losses.phases``, as StyleGAN2-ADA's
training loop builds its phases), steps the optimizers, updates the generator EMA and counts
progress. It never reads a device value back to the host in the steady state, so a GPU queue keeps
running ahead:

- progress (images seen, minibatches, regularizer passes) is kept in Python ints and mirrored into
  the checkpointed buffers only when a state dict is taken;
- a non-finite loss is detected on the device (one all-reduce under DDP, so every process agrees)
  and its step is neutralised by zeroing the gradients; NaN/inf gradient entries are zeroed; the
  counts and the streak of bad minibatches accumulate on the device and are read every
  ``check_every`` minibatches, before every checkpoint and at the end (``check_health``);
- scalars are logged every ``log_every`` minibatches.

With ``augment=ada`` every image D sees goes through ``losses.augment.AugmentPipe`` with
probability ``ada_p`` (a checkpointed buffer, logged as ``train/ada_p``): ``Dmain`` returns the
signs of D's outputs on the reals, summed over processes each minibatch into ``ada_signs`` (also
checkpointed, so every process and every resume holds the global count), and every
``ada_interval`` minibatches ``ada_adjust`` moves p toward ``ada_target`` (None: p stays fixed).

Progress is counted in images (kimg), never in ``trainer.global_step``, which Lightning advances
once per optimizer step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import nn

from gpen_lightning.io import atomic_save
from gpen_lightning.losses.augment import AugmentPipe, ada_adjust
from gpen_lightning.losses.phases import REGULARIZATION, GANLoss, PhaseLoss, PhaseOutput
from gpen_lightning.training.ema import ema_beta, update_ema
from gpen_lightning.training.grads import sanitize_grads, world_size
from gpen_lightning.zoo.ops import fp32

__all__ = ["GANModule", "TrainingPhase", "eval_mode"]

log = logging.getLogger(__name__)

# host counters <-> checkpointed buffers of the same name
_COUNTERS = ("images_seen", "batches", "r1_steps", "pl_steps")


@dataclass(frozen=True)
class TrainingPhase:
    """One phase of a minibatch: the network it trains, that network's optimizer (its index in
    ``configure_optimizers``), the minibatches it runs on and its loss.

    Args:
        name: ``Dmain``, ``Dreg``, ``Gmain`` or ``Greg`` (logs and tests).
        network: the module whose gradients the phase makes and averages.
        optimizer: 0 (G's) or 1 (D's).
        interval: runs on the minibatches ``step % interval == 0`` (1: every one, 0: never).
        loss: the loss object's phase method (``PhaseLoss``).
        counter: the progress counter a lazy regularizer advances (``r1_steps``, ``pl_steps``).
    """

    name: str
    network: nn.Module
    optimizer: int
    interval: int
    loss: PhaseLoss
    counter: str | None = None

    def due(self, step: int) -> bool:
        return self.interval > 0 and step % self.interval == 0


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` in eval mode inside the block, restoring its previous mode after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def _all_reduce(x: torch.Tensor, op: str) -> torch.Tensor:
    """``x`` reduced over processes (``"min"``, ``"mean"`` or ``"sum"``) without a barrier;
    identity when not distributed. Lightning's ``strategy.reduce`` adds a barrier, which blocks the
    host."""
    n_proc = world_size()
    if n_proc == 1:
        return x
    x = fp32(x.detach().clone())
    dist.all_reduce(x, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
    return x / n_proc if op == "mean" else x


class GANModule(L.LightningModule):
    """Base of ``PriorModule`` and ``FinetuneModule``. Subclasses set ``self.discriminator``,
    ``self.g_ema``, ``self.loss`` (a ``GANLoss``) and define the property ``trained_generator``
    (the G network the optimizer trains and ``g_ema`` averages: the prior's ``Generator``, or the
    whole ``GPEN`` when fine-tuning; a property, not a second registered name of that network,
    which would store it twice in every checkpoint), and read ``hparams`` ``max_kimg``,
    ``max_nan_streak``, ``ema_half_life_kimg``, ``ema_rampup``, ``log_every``, ``check_every``
    and the ``augment`` / ``ada_*`` options."""

    loss: GANLoss
    trained_generator: nn.Module

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        # Checkpointed state. Progress is mirrored from the host counters below on state_dict().
        for name in (*_COUNTERS, "nonfinite_grads", "nonfinite_losses"):
            self.register_buffer(name, torch.zeros((), dtype=torch.long))
        self.register_buffer("pl_mean", torch.zeros(()))
        # adaptive augmentation: p, and [sum of sign(D(real)), count] since the last adjustment
        self.register_buffer("ada_p", torch.zeros(()))
        self.register_buffer("ada_signs", torch.zeros(2, dtype=torch.long))
        self._ada_loaded = False  # a state dict set ada_p; else it starts at hparams ada_p
        # Consecutive minibatches with a non-finite loss (now, and the most since the last check).
        self.register_buffer("nan_streak", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("max_nan_streak", torch.zeros((), dtype=torch.long), persistent=False)
        self.progress = dict.fromkeys(_COUNTERS, 0)  # host counters
        self.diverged = False
        self._tick: tuple[float, int] | None = None
        self._stats: dict[str, torch.Tensor] = {}  # the latest value of every statistic (device)
        self._phases: tuple[TrainingPhase, ...] | None = None
        self.register_state_dict_pre_hook(lambda module, *_: module._mirror_progress())
        self.register_load_state_dict_post_hook(lambda module, _: module._read_progress())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints written before ``trained_generator`` became a property hold the trained
        network twice, the second time under ``trained.`` or ``trained_generator.``: drop it."""
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(("trained.", "trained_generator."))]:
            del state[key]
        if state and "ada_p" not in state:  # written before adaptive augmentation
            state["ada_p"] = torch.tensor(float(self.hparams.get("ada_p", 0.0)))
            state["ada_signs"] = torch.zeros(2, dtype=torch.long)

    # -- progress ----------------------------------------------------------------------------
    @property
    def num_images(self) -> int:
        """Images seen so far, over all processes (a host int)."""
        return self.progress["images_seen"]

    @property
    def kimg(self) -> float:
        return self.num_images / 1000.0

    @torch.no_grad()
    def _mirror_progress(self) -> None:
        for name in _COUNTERS:
            getattr(self, name).fill_(self.progress[name])

    def _read_progress(self) -> None:
        self.progress = {name: int(getattr(self, name)) for name in _COUNTERS}
        self._ada_loaded = True

    def regularization(self) -> dict[str, Any]:
        """The lazy-regularization settings of ``hparams`` for the loss object."""
        return {k: self.hparams[k] for k in REGULARIZATION}

    # -- one minibatch ------------------------------------------------------------------------
    def _scaler(self) -> torch.amp.GradScaler | None:
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        return scaler if scaler is not None and scaler.is_enabled() else None

    @property
    def phases(self) -> tuple[TrainingPhase, ...]:
        """The phase records, in the order they run (built once, on first use, with the
        augmentation pipe of ``augment``)."""
        if self._phases is None:
            if self.hparams.get("augment", "none") == "ada":
                self.loss.augment = AugmentPipe()
                if not self._ada_loaded:  # p starts at ada_p unless a checkpoint restored it
                    self.ada_p.fill_(self.hparams.ada_p)
            loss, g, d = self.loss, self.trained_generator, self.discriminator
            self._phases = (
                TrainingPhase("Dmain", d, 1, 1, loss.d_main),
                TrainingPhase("Dreg", d, 1, loss.r1_every, loss.d_reg, "r1_steps"),
                TrainingPhase("Gmain", g, 0, 1, loss.g_main),
                TrainingPhase("Greg", g, 0, loss.pl_every, loss.g_reg, "pl_steps"),
            )
        return self._phases

    def training_step(self, batch: dict, batch_idx: int) -> None:
        optimizers = self.optimizers()
        step = self.progress["batches"]
        logs: dict[str, torch.Tensor] = {}
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        for phase in self.phases:
            if not phase.due(step):
                continue
            opt = optimizers[phase.optimizer]
            self.toggle_optimizer(opt)
            bad |= ~self._run_phase(phase, batch, opt, logs)
            self.untoggle_optimizer(opt)
            if phase.counter is not None:
                self.progress[phase.counter] += 1
        self._advance(len(next(iter(batch.values()))), bad, logs)

    def _phase_loss(self, phase: TrainingPhase, batch: dict) -> PhaseOutput:
        """The loss of ``phase``. Under ``16-mixed`` the inner gradient of a penalty is taken on
        the scaled output and can overflow fp16: then back the scale off (as the GradScaler does
        after an overflowing step) and recompute, up to 16 times (this reads the loss back: fp16
        penalties only)."""
        scaler = self._scaler()
        kw = dict(
            scaler=scaler,
            pl_mean=self.pl_mean,
            reduce_mean=lambda x: _all_reduce(x, "mean"),
            augment_p=self.ada_p,
        )
        for _ in range(16):
            loss, stats = phase.loss(batch, **kw)
            if scaler is None or phase.counter is None or bool(torch.isfinite(loss)):
                break
            scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
        return loss, stats

    def _run_phase(self, phase: TrainingPhase, batch: dict, opt, logs: dict) -> torch.Tensor:
        """Forward, backward and step of one phase; returns whether its loss was finite on every
        process (a 0-d bool tensor on the device)."""
        opt.zero_grad(set_to_none=True)
        loss, stats = self._phase_loss(phase, batch)
        finite = _all_reduce(torch.isfinite(loss.detach()).float(), "min").bool()
        self.manual_backward(loss)
        # one all-reduce of this phase's gradients under DDP (PhaseDDPStrategy); 16-mixed: the
        # GradScaler skips non-finite steps itself
        clean = self._scaler() is None
        bad = sanitize_grads(phase.network.parameters(), keep=finite, average=True, clean=clean)
        if clean:
            self.nonfinite_grads += bad
        opt.step()
        self.nonfinite_losses += (~finite).long()
        new_mean = stats.pop("pl_mean", None)
        if new_mean is not None:
            self.pl_mean.copy_(torch.where(finite, new_mean, self.pl_mean))
        signs = stats.pop("ada_signs", None)
        if signs is not None:  # summed over processes now: any process's checkpoint has them all
            self.ada_signs += torch.round(_all_reduce(signs, "sum").double()).long()
        logs.update(stats)
        return finite

    def _average_tracked_buffers(self) -> None:
        """Under DDP, average the trained network's ``w_avg`` over processes: each process moved
        it towards its own samples' mean w by the same lerps, which are linear, so the average is
        what one process with the global minibatch computes (one all-reduce of ``style_dim``
        floats per minibatch)."""
        if world_size() == 1:
            return
        for name, buf in self.trained_generator.named_buffers():
            if name.endswith("w_avg"):
                buf.copy_(_all_reduce(buf, "mean"))

    def _advance(self, batch: int, bad: torch.Tensor, logs: dict) -> None:
        """After a minibatch: EMA of the trained network into ``g_ema``, counters, NaN streak and,
        every ``log_every`` minibatches, the logs."""
        global_batch = batch * self.trainer.world_size
        self._average_tracked_buffers()
        beta = ema_beta(
            global_batch,
            half_life_kimg=self.hparams.ema_half_life_kimg,
            images_seen=self.num_images,
            rampup=self.hparams.ema_rampup,
        )
        update_ema(self.g_ema, self.trained_generator, beta)
        self.progress["images_seen"] += global_batch
        self.progress["batches"] += 1
        self.nan_streak.mul_(bad).add_(bad.long())  # +1 on a bad minibatch, else back to 0
        torch.maximum(self.max_nan_streak, self.nan_streak, out=self.max_nan_streak)
        self._adapt_augment(global_batch, logs)
        self._stats.update(logs)  # lazy regularizers report on their own minibatches
        if self.progress["batches"] % max(1, self.hparams.log_every) == 0:
            self._log(batch, beta, dict(self._stats))

    def _adapt_augment(self, global_batch: int, logs: dict) -> None:
        """Every ``ada_interval`` minibatches, move p by the sign statistic (StyleGAN2-ADA)."""
        if self.loss.augment is None:
            return
        target, interval = self.hparams.ada_target, max(1, self.hparams.ada_interval)
        if target is not None and self.progress["batches"] % interval == 0:
            counts = self.ada_signs
            logs["train/ada_rt"] = counts[0].to(self.ada_p) / counts[1].clamp(min=1)
            images = global_batch * interval
            new_p = ada_adjust(
                self.ada_p, counts, target=target, images=images, ada_kimg=self.hparams.ada_kimg
            )
            self.ada_p.copy_(new_p)
            self.ada_signs.zero_()
        logs["train/ada_p"] = self.ada_p.detach().clone()

    def _log(self, batch: int, beta: float, logs: dict) -> None:
        now = time.perf_counter()
        if self._tick is not None:
            t0, n0 = self._tick
            logs["perf/img_per_sec"] = (self.num_images - n0) / max(now - t0, 1e-9)
        self._tick = (now, self.num_images)
        logs["progress/kimg"] = self.kimg
        logs["train/ema_beta"] = beta
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=batch)
        self._show_progress(logs)

    def _show_progress(self, logs: dict) -> None:
        """``kimg``, ``d`` and ``g`` in the progress bar as Python numbers, read back here (a log
        step, one sync) and kept until the next: Lightning converts every tensor logged with
        ``prog_bar=True`` back to a number on every minibatch, a host sync each."""
        if self._trainer is None:
            return
        values = {"kimg": round(self.kimg, 3)}
        pair = [logs[k] for k in ("train/loss_d", "train/loss_g") if k in logs]
        if len(pair) == 2:
            values["d"], values["g"] = torch.stack([v.float() for v in pair]).tolist()
        self.trainer.progress_bar_metrics.update(values)

    # -- health and stopping -------------------------------------------------------------------
    def check_health(self) -> bool:
        """Read the NaN streak back (one host sync) and mark the run diverged once
        ``max_nan_streak`` consecutive minibatches had a non-finite loss. Returns ``not
        diverged``. Called every ``check_every`` minibatches, before checkpoints and at the end."""
        limit = self.hparams.max_nan_streak
        worst = int(self.max_nan_streak)
        self.max_nan_streak.copy_(self.nan_streak)
        if limit and worst >= limit and not self.diverged:
            self.diverged = True
            log.error(
                "stopping: %d consecutive minibatches had a non-finite loss (their steps were "
                "skipped); the last checkpoint written before this point is kept. Lower the "
                "learning rate or try trainer.precision=32-true.",
                worst,
            )
        return not self.diverged

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.progress["batches"] % max(1, self.hparams.check_every) == 0:
            self.check_health()
        if self.diverged or self.num_images >= self.hparams.max_kimg * 1000:
            self.trainer.should_stop = True

    def on_train_end(self) -> None:
        self.check_health()

    # -- weights -----------------------------------------------------------------------------
    def _save_weights(self, path, fmt: str) -> None:
        """``{"g_ema", "g", "d", "meta"}`` on CPU, atomically: the layout of an official training
        checkpoint, so ``load_network(path)`` returns the EMA network (``part="discriminator"``
        the D); plain tensors, loadable with ``weights_only=True``."""
        cpu = lambda m: {k: v.detach().cpu() for k, v in m.state_dict().items()}  # noqa: E731
        meta = {
            "format": fmt,
            "model": dict(self.hparams.model),
            "kimg": self.kimg,
            "images_seen": self.num_images,
        }
        nets = {"g_ema": self.g_ema, "g": self.trained_generator, "d": self.discriminator}
        atomic_save({**{k: cpu(net) for k, net in nets.items()}, "meta": meta}, path)

    def _adam(self, params, **kwargs) -> torch.optim.Adam:
        """Adam with the fastest implementation for the device: fused kernels on CUDA
        (``fused_adam`` None or True), the multi-tensor (foreach) one elsewhere."""
        fused = self.hparams.get("fused_adam")
        if fused is None:
            fused = self.device.type == "cuda"
        if fused:
            return torch.optim.Adam(params, fused=True, **kwargs)
        return torch.optim.Adam(params, foreach=True, **kwargs)
