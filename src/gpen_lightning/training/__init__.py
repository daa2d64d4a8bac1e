"""Lightning orchestration of the training stages: modules, callbacks, EMA and gradient helpers.

The maths lives in ``gpen_lightning.losses`` and the networks in ``gpen_lightning.zoo``.
"""

from gpen_lightning.training.base import GANModule
from gpen_lightning.training.callbacks import (
    AtomicCheckpointIO,
    KimgCheckpoint,
    SampleGrid,
    SWDMonitor,
)
from gpen_lightning.training.ema import ema_beta, update_ema
from gpen_lightning.training.finetune import FinetuneModule, latest_prior
from gpen_lightning.training.grads import sanitize_grads
from gpen_lightning.training.prior import PriorModule

__all__ = [
    "AtomicCheckpointIO",
    "FinetuneModule",
    "GANModule",
    "KimgCheckpoint",
    "PriorModule",
    "SWDMonitor",
    "SampleGrid",
    "ema_beta",
    "latest_prior",
    "sanitize_grads",
    "update_ema",
]
