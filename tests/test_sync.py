"""The steady-state training step of both stages never reads a value back to the host.

Every way a tensor reaches Python (``item``, ``__bool__``, ``__int__``, ``__float__``,
``tolist``, ``cpu``) is counted while Lightning's ``Strategy.training_step`` runs on chosen
minibatches; ``optimizer.step`` is excluded (its step counters are host tensors). On a GPU each
such call would stall the queue.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import Strategy
from omegaconf import open_dict

from gpen_lightning.config import compose
from gpen_lightning.train import train

# fp16 autocast on CPU (Lightning maps 16-mixed to bf16 there): the GradScaler path
FP16_CPU = {
    "_target_": "lightning.pytorch.plugins.precision.MixedPrecision",
    "precision": "16-mixed",
    "device": "cpu",
}
HOST_READS = ("item", "__bool__", "__int__", "__float__", "tolist", "cpu")


class SyncCounter:
    """Counts host reads of tensors during the training step of the chosen minibatches."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, minibatches: set[int]) -> None:
        self.minibatches = minibatches
        self.active = False
        self.counts: dict[int, list[str]] = {}
        self._current: int | None = None
        for name in HOST_READS:
            monkeypatch.setattr(
                torch.Tensor, name, self._counting(name, getattr(torch.Tensor, name))
            )
        monkeypatch.setattr(Strategy, "training_step", self._step(Strategy.training_step))
        monkeypatch.setattr(LightningOptimizer, "step", self._paused(LightningOptimizer.step))

    def _counting(self, name, original):
        def wrapper(tensor, *args, **kwargs):
            if self.active:
                self.counts[self._current].append(name)
            return original(tensor, *args, **kwargs)

        return wrapper

    def _step(self, original):
        def wrapper(strategy, *args, **kwargs):
            index = strategy.lightning_module.progress["batches"]
            if index not in self.minibatches:
                return original(strategy, *args, **kwargs)
            self._current, self.active = index, True
            self.counts[index] = []
            try:
                return original(strategy, *args, **kwargs)
            finally:
                self.active = False

        return wrapper

    def _paused(self, original):
        def wrapper(*args, **kwargs):
            was, self.active = self.active, False
            try:
                return original(*args, **kwargs)
            finally:
                self.active = was

        return wrapper


def _cfg(tmp_path: Path, stage: str):
    return compose(
        [
            f"stage={stage}",
            "logger=csv",
            f"paths.output_dir={tmp_path}",
            "model.recipe.prior_kimg=0.15",  # 19 minibatches of 8
            "model.recipe.finetune_kimg=0.15",
            *(["module.init=none"] if stage == "finetune" else []),
            "module.r1_gamma=10",
            "module.pl_weight=2",
            "data.synthetic_length=64",
            "data.val_fraction=0.25",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "validate_first=false",
            "validate_last=false",
        ]
    )


@pytest.mark.parametrize("stage", ["prior", "finetune"])
def test_steady_state_step_reads_nothing_back(stage, tmp_path, monkeypatch):
    # minibatch 5: main phases only; 16: R1 and path length too. Neither ends on a log or a
    # NaN check (log_every = check_every = 10 minibatches).
    counter = SyncCounter(monkeypatch, {5, 16})
    result = train(_cfg(tmp_path, stage))
    assert set(counter.counts) == {5, 16}, "the chosen minibatches did not run"
    assert counter.counts == {5: [], 16: []}
    assert result["metrics"]["train/r1"] > 0 and result["metrics"]["train/pl_penalty"] >= 0


def test_the_counter_sees_host_reads(tmp_path, monkeypatch):
    """The counter is live: under fp16 (GradScaler) the penalties are read back to retry an
    overflowing inner gradient, on the R1 / path-length minibatch only."""
    counter = SyncCounter(monkeypatch, {5, 16})
    cfg = _cfg(tmp_path, "prior")
    with open_dict(cfg):
        cfg.trainer.precision = None
        cfg.trainer.plugins = [FP16_CPU]
    train(cfg)
    assert counter.counts[5] == []
    assert counter.counts[16].count("__bool__") == 2  # one per penalty (R1, path length)
