"""Callbacks driven by progress in images (kimg): sample grids, checkpoints and weight exports.

They work with any module that exposes ``num_images`` (images seen, an int), ``sample_images()``
(an image batch in [-1, 1]) and ``export_weights(path)``; ``diverged`` (bool) suppresses saving
and an optional ``check_health()`` is asked first.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torchvision.utils import make_grid, save_image

from gpen_lightning.data.datamodule import stack_faces
from gpen_lightning.io import atomic_save, atomic_write

__all__ = ["AtomicCheckpointIO", "KimgCheckpoint", "SWDMonitor", "SampleGrid"]

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file beside the target and renamed onto it
    (``os.replace``): never half-written.

    Lightning's own ``_atomic_save`` (2.6) is not atomic for local paths: its fsspec transaction
    serialises the whole checkpoint into memory, writes it to a file in the system temp folder and
    ``shutil.move``s it to the target, which across file systems (``/tmp`` on tmpfs, checkpoints
    on a data disk) is a copy that an interruption leaves truncated. Remote URLs still go through
    Lightning."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options=None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_save(checkpoint, path)


class _KimgTicker(L.Callback):
    """Fires ``_fire`` each time ``images_seen`` crosses a multiple of ``every_kimg``, and at the
    end of training."""

    def __init__(self, every_kimg: float) -> None:
        if every_kimg <= 0:
            raise ValueError(f"every_kimg must be > 0, got {every_kimg}")
        self.every_images = every_kimg * 1000
        self._last: int | None = None

    def _tick(self, module: L.LightningModule) -> int:
        return math.floor(module.num_images / self.every_images)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = self._tick(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        tick = self._tick(pl_module)
        if self._last is not None and tick > self._last:
            self._last = tick
            self._fire(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._fire(trainer, pl_module)

    def _fire(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise NotImplementedError


class SampleGrid(_KimgTicker):
    """Sample grids from the module's fixed latents, every ``every_kimg``, at start and at end.

    Written to ``dirpath/kimg_XXXXXX.png`` (rank zero, atomically) and sent to the loggers that
    take images (wandb, TensorBoard).
    """

    def __init__(self, *, dirpath: str | os.PathLike[str], every_kimg: float = 1.0) -> None:
        super().__init__(every_kimg)
        self.dirpath = Path(dirpath)
        self.written: list[Path] = []

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if pl_module.num_images == 0:
            self._fire(trainer, pl_module)

    def _fire(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        images = pl_module.sample_images().float().cpu()  # (N, 3, S, S) in [-1, 1]
        nrow = getattr(pl_module, "sample_nrow", None) or max(1, round(math.sqrt(len(images))))
        grid = make_grid(images, nrow=nrow, normalize=True, value_range=(-1, 1))
        kimg = pl_module.num_images / 1000
        path = self.dirpath / f"kimg_{kimg:010.3f}.png"
        atomic_write(path, lambda tmp: save_image(grid, tmp, format="png"))
        self.written.append(path)
        for logger in trainer.loggers:
            _log_image(logger, grid, step=trainer.global_step, kimg=kimg)


def _log_image(logger: Any, grid: torch.Tensor, *, step: int, kimg: float) -> None:
    if hasattr(logger, "log_image"):  # WandbLogger
        logger.log_image(key="samples", images=[grid], step=step, caption=[f"kimg {kimg:.3f}"])
    elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoardLogger
        logger.experiment.add_image("samples", grid, global_step=step)


class KimgCheckpoint(_KimgTicker):
    """Lightning checkpoints every ``every_kimg`` and at the end, plus the module's weight export.

    Writes ``dirpath/last.ckpt`` (resume with ``ckpt_path=``), optionally a kept snapshot
    ``dirpath/kimg_XXXXXX.ckpt``, and ``export_path`` through ``module.export_weights``. Nothing
    is written once the module reports ``diverged`` or holds non-finite weights, so the last good
    files stay.
    """

    def __init__(
        self,
        *,
        dirpath: str | os.PathLike[str],
        every_kimg: float = 1.0,
        snapshots: bool = True,
        export_path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(every_kimg)
        self.dirpath = Path(dirpath)
        self.snapshots = snapshots
        self.export_path = Path(export_path) if export_path is not None else None
        self.last_path: Path | None = None

    def _fire(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if hasattr(pl_module, "check_health"):
            pl_module.check_health()  # reads the device-side NaN streak before anything is saved
        if getattr(pl_module, "diverged", False):
            log.warning("not saving: the run diverged; the previous checkpoint is kept")
            return
        if not all(bool(torch.isfinite(p).all()) for p in pl_module.parameters()):
            log.warning("not saving: the weights hold NaN/inf; the previous checkpoint is kept")
            return
        last = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(last, weights_only=False)
        self.last_path = last
        if self.snapshots:
            kimg = pl_module.num_images / 1000
            trainer.save_checkpoint(self.dirpath / f"kimg_{kimg:010.3f}.ckpt", weights_only=False)
        if self.export_path is not None and trainer.is_global_zero:
            pl_module.export_weights(self.export_path)


class SWDMonitor(_KimgTicker):
    """``val/swd`` (multi-scale sliced Wasserstein distance x 1e3, and ``val/swd_<res>`` per level)
    between ``n_images`` EMA samples and the first ``n_images`` training faces, every
    ``every_kimg`` and at the end. Acts on modules with ``swd_samples(n)`` (the prior stage)."""

    def __init__(self, *, every_kimg: float = 1.0, n_images: int = 128) -> None:
        super().__init__(every_kimg)
        self.n_images = n_images
        self._real: torch.Tensor | None = None

    def _fire(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "swd_samples") or getattr(pl_module, "diverged", False):
            return
        from gpen_lightning.metrics import swd

        if self._real is None:
            self._real = stack_faces(trainer.datamodule.train_set, self.n_images)
        real = self._real.to(pl_module.device)
        fake = pl_module.swd_samples(len(real)).to(real)
        metrics = {f"val/{k}": v for k, v in swd(real, fake).items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        for k, v in metrics.items():
            trainer.callback_metrics[k] = torch.tensor(v)
