"""``stage=restore trainer.devices=N`` (and ``trainer=multinode``): the input files split over
processes by Lightning's ``Trainer.predict``. Its distributed sampler for prediction hands every
file to exactly one process (no padding repeats); each process restores its share and a
``RestoreWriter`` callback writes the outputs as each batch ends; the per-process reports are
gathered into one summary on global rank 0."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import lightning as L
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from gpen_lightning.restore.batch import Pending, Report, RestoreRun
from gpen_lightning.restore.restorer import Restorer
from gpen_lightning.runtime import close_process_group

__all__ = ["RestoreModule", "RestoreWriter", "predict_files"]


class RestoreModule(L.LightningModule):
    """Restores the files of ``run`` whose indices its batches hold. The run's ``Restorer`` is
    built in ``setup`` on the process's own device; images are restored here, written by
    ``RestoreWriter``; videos stream through the network and the encoder here (their frames are
    written as they go)."""

    def __init__(self, run: RestoreRun, make_restorer: Callable[[torch.device], Restorer]) -> None:
        super().__init__()
        self.run, self.make_restorer = run, make_restorer

    def setup(self, stage: str) -> None:
        self.run.restorer = self.make_restorer(self.trainer.strategy.root_device)
        self.run.show_progress = self.trainer.is_global_zero

    def predict_step(self, batch: list[int]) -> tuple[list[Pending], list]:
        items = [self.run.take(self.run.files[index]) for index in batch]
        pending = [item for item in items if item is not None]
        return pending, self.run.restore(pending)


class RestoreWriter(BasePredictionWriter):
    """Writes each batch's restored images, then gathers the processes' reports."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self.report: Report | None = None

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        pending, results = prediction
        pl_module.run.write_all(pending, results)

    def on_predict_end(self, trainer: L.Trainer, pl_module: RestoreModule) -> None:
        reports = [pl_module.run.report]
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            reports = [None] * trainer.world_size
            dist.all_gather_object(reports, pl_module.run.report)
        self.report = functools.reduce(Report.merge, reports, Report())


def predict_files(
    *, trainer: Mapping, run: RestoreRun, make_restorer: Callable[[torch.device], Restorer]
) -> Report | None:
    """Restore the files of ``run`` over the processes the ``trainer`` config (Lightning
    ``Trainer`` arguments) asks for, each process with ``make_restorer(its device)``; the merged
    report on global rank 0, None on the other ranks."""
    writer = RestoreWriter()
    predictor = instantiate(
        dict(trainer),
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[writer],
        default_root_dir=str(run.out_dir),
        inference_mode=True,
        _convert_="all",
    )
    loader = DataLoader(
        range(len(run.files)),  # file indices: read in predict_step, where failures are accounted
        batch_size=run.options.images_per_batch,
        collate_fn=list,
        shuffle=False,
    )
    predictor.predict(RestoreModule(run, make_restorer), loader, return_predictions=False)
    close_process_group()
    return writer.report if predictor.is_global_zero else None
