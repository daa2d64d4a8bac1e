"""``train(cfg)``: build the data, module, callbacks, loggers and trainer of a composed config and
fit. Called by ``python -m gpen_lightning stage=prior|finetune`` and directly by tests.

``objective(result, metric)``: the value a sweeper optimizes (``optimized_metric``, e.g. the
prior's ``val/swd`` or fine-tuning's ``val/psnr``); a diverged run or a missing or non-finite
value raises ``TrialFailed``, which Hydra records as a failed job and the Optuna sweeper as a
failed trial, without ending the sweep."""

from __future__ import annotations

import logging
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig

from gpen_lightning.runtime import close_process_group, process_count
from gpen_lightning.training.callbacks import AtomicCheckpointIO, KimgCheckpoint, SampleGrid
from gpen_lightning.training.distributed import PhaseDDPStrategy

__all__ = ["TrialFailed", "build_run", "ddp_strategy", "objective", "train"]

log = logging.getLogger(__name__)


def ddp_strategy(process_group_backend: str | None = None) -> DDPStrategy:
    """The DDP strategy of every multi-process run (``trainer=ddp|ddp_sim|multinode`` and
    ``trainer.devices>1``): ``PhaseDDPStrategy``, whose GAN modules all-reduce the gradients of
    the network each phase trains, once per phase (no DDP wrapper, no unused-parameter search)."""
    return PhaseDDPStrategy(process_group_backend=process_group_backend)


def _instantiate_all(node: DictConfig | None) -> list[Any]:
    """A dict of ``_target_`` configs (``None`` entries skipped) -> list of objects."""
    if not node:
        return []
    return [instantiate(v, _convert_="all") for v in node.values() if v is not None]


def _trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    overrides: dict[str, Any] = {}
    if cfg.trainer.get("strategy", "auto") in ("auto", "ddp") and process_count(cfg.trainer) > 1:
        overrides["strategy"] = ddp_strategy()
    plugins = [instantiate(p, _convert_="all") for p in cfg.trainer.get("plugins") or []]
    return instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[*plugins, AtomicCheckpointIO()],
        _convert_="all",
        **overrides,
    )


def build_run(
    cfg: DictConfig, *, extra_callbacks: Sequence[L.Callback] = ()
) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Set TF32, seed, then instantiate the config's DataModule, module, callbacks, loggers and
    Trainer (``extra_callbacks`` appended): what ``train`` fits, for benchmarks and custom loops."""
    # TF32 matmuls and convolutions on Ampere and newer GPUs (cuDNN's autotuner: trainer.benchmark)
    tf32 = bool(cfg.get("tf32", True))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, _convert_="all")
    module = instantiate(cfg.module, _convert_="all")
    callbacks = [*_instantiate_all(cfg.get("callbacks")), *extra_callbacks]
    loggers = _instantiate_all(cfg.get("logger"))
    trainer = _trainer(cfg, callbacks, loggers)
    if trainer.precision == "64-true":
        # in float64 before a checkpoint is restored into it: Lightning converts the module
        # after restoring, which would round resumed weights through float32
        module = module.double()
    return datamodule, module, trainer


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the stage's module on its data as configured; return where things were written.

    Returns:
        ``{"output_dir", "checkpoint", "export", "samples", "kimg", "diverged", "metrics"}``
        (paths as strings or None, ``metrics``: the last logged values as floats).
    """
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path} does not exist; give a Lightning checkpoint such as "
            "outputs/prior/runs/<timestamp>/checkpoints/last.ckpt"
        )
    datamodule, module, trainer = build_run(cfg)
    callbacks, loggers = trainer.callbacks, trainer.loggers
    if trainer.is_global_zero:
        Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
    before = after = None
    try:
        if cfg.get("validate_first") and not ckpt_path:
            before = _scalars(trainer.validate(module, datamodule=datamodule, verbose=False))
        with warnings.catch_warnings():
            if not is_overridden("validation_step", module):
                # the prior stage validates nothing; the shared DataModule still defines a loader
                warnings.filterwarnings("ignore", "You passed in a `val_dataloader` but have no")
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if cfg.get("validate_last") and not getattr(module, "diverged", False):
            after = _scalars(trainer.validate(module, datamodule=datamodule, verbose=False))
    finally:
        if "wandb" in sys.modules and any(type(lg).__name__ == "WandbLogger" for lg in loggers):
            sys.modules["wandb"].finish()  # one wandb run per job, also under multirun
    close_process_group()  # every process done: no gloo/NCCL group left for interpreter exit

    ckpt = next((c for c in callbacks if isinstance(c, KimgCheckpoint)), None)
    samples = next((c for c in callbacks if isinstance(c, SampleGrid)), None)
    export = ckpt.export_path if ckpt is not None and ckpt.export_path else None
    result = {
        "output_dir": str(cfg.paths.output_dir),
        "checkpoint": str(ckpt.last_path) if ckpt is not None and ckpt.last_path else None,
        "export": str(export) if export is not None and export.is_file() else None,
        "samples": str(samples.dirpath) if samples is not None and samples.written else None,
        "kimg": getattr(module, "num_images", 0) / 1000,
        "diverged": bool(getattr(module, "diverged", False)),
        "metrics": metrics,
        "validation_first": before,
        "validation_last": after,
    }
    _report(result, trainer)
    return result


class TrialFailed(RuntimeError):
    """A sweep job without a usable objective value: it diverged, or its metric is missing or
    not finite."""


def objective(result: dict[str, Any], metric: str) -> float:
    """The value of ``metric`` in a ``train`` result: from the validation after training when
    there was one, else the last logged value (the prior's ``val/swd`` is logged at the end).

    Raises:
        TrialFailed: the run diverged, or ``metric`` was not logged or is NaN/inf.
    """
    where = result["output_dir"]
    if result["diverged"]:
        raise TrialFailed(f"the run diverged (non-finite losses); its outputs are in {where}")
    values = {**result["metrics"], **(result.get("validation_last") or {})}
    if metric not in values:
        raise TrialFailed(
            f"optimized_metric={metric} was not logged by the run in {where}; logged: "
            f"{sorted(values)}. Set optimized_metric to one of them (the prior logs val/swd "
            "with callbacks.swd on, fine-tuning val/psnr with validate_last=true)."
        )
    value = float(values[metric])
    if not math.isfinite(value):
        raise TrialFailed(f"{metric} = {value} in the run in {where}")
    return value


def _scalars(results: list[dict] | None) -> dict[str, float] | None:
    return {k: float(v) for k, v in results[0].items()} if results else None


@rank_zero_only
def _report(result: dict[str, Any], trainer: L.Trainer) -> None:
    lines = [
        f"\n{'Run diverged' if result['diverged'] else 'Done'}: {result['kimg']:.3f} kimg, "
        f"{trainer.global_step} optimizer steps.",
        f"  outputs     {result['output_dir']}",
    ]
    for key, label in (("samples", "samples"), ("checkpoint", "checkpoint"), ("export", "weights")):
        if result[key]:
            lines.append(f"  {label:<11} {result[key]}")
    for key, label in (("validation_first", "first"), ("validation_last", "last")):
        if result[key]:
            vals = ", ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in sorted(result[key].items()))
            lines.append(f"  validation ({label}): {vals}")
    if result["checkpoint"]:
        lines.append(f"  resume with ckpt_path={result['checkpoint']}")
    print("\n".join(lines), flush=True)
