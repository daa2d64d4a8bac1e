"""The options of the training stages' modules, in one place: ``PriorModule(model=..., **options)``
takes the fields of ``PriorOptions``, ``FinetuneModule`` those of ``FinetuneOptions``, and the Hydra
stage configs start from the same defaults (``register_configs``: config group ``module``, options
``prior`` and ``finetune``), so ``conf/stage/<stage>.yaml`` lists only what the model preset's
recipe decides and ``python -m gpen_lightning --cfg job`` still shows every option.

Plain Python (no torch): the configs compose before torch is imported (``cpu_huge_pages``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AUGMENTS",
    "STAGES",
    "FinetuneOptions",
    "GANOptions",
    "PriorOptions",
    "register_configs",
    "stage_node",
]


AUGMENTS = ("none", "ada")  # ``augment``: off, or adaptive discriminator augmentation


@dataclass(frozen=True, kw_only=True)
class GANOptions:
    """The options both training stages share (``GANModule`` reads most of them).

    Args:
        lr, betas: Adam settings before the lazy-regularization correction (spec: 0.002, (0, 0.99));
            fine-tuning: the encoder's lr (see ``FinetuneOptions.lr_ratio``).
        r1_gamma, r1_every: R1 weight and interval in minibatches; 0 turns it off.
        pl_weight, pl_every, pl_decay, pl_batch_shrink: path-length regularization (StyleGAN2:
            2, 4, 0.01, 2); weight 0 turns it off.
        stddev_group: minibatch-stddev group of D (None: the whole per-device batch).
        ema_half_life_kimg, ema_rampup: generator EMA half-life in thousands of images (10) and
            the optional ramp-up factor (None: off; StyleGAN2-ADA uses 0.05).
        max_kimg: stop after this many thousand images (counted over all processes).
        n_samples: images in the sample grids.
        max_nan_streak: stop the run after this many consecutive minibatches with a non-finite loss
            (their steps are skipped); 0 disables the check.
        log_every, check_every: log scalars / read the NaN streak back every this many
            minibatches (the steps in between never wait for the device).
        compile: ``torch.compile`` G and D for the main phases (the regularization phases, which
            take double backward, run the eager modules; CUDA, slow to start).
        channels_last: run the networks' activations channels-last (faster convolutions on CPU
            and CUDA); False runs them contiguous.
        fused_adam: fused Adam kernels; None picks them on CUDA.
        augment: ``"none"`` or ``"ada"``: StyleGAN2-ADA's augmentations (flips, integer
            translation, rotations, isotropic/anisotropic scaling, colour) on every image D sees,
            reals and fakes, with probability p (``gpen_lightning.losses.augment``).
        ada_p: p at the start (kept when a checkpoint is resumed).
        ada_target: the target of ``r_t = E[sign(D(real))]`` (0.6); None keeps p fixed at
            ``ada_p``.
        ada_interval: adjust p every this many minibatches (4).
        ada_kimg: thousands of images for p to go from 0 to 1 (StyleGAN2-ADA: 500; short runs
            need far fewer).
    """

    lr: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 10.0
    r1_every: int = 16
    pl_weight: float = 2.0
    pl_every: int = 4
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    stddev_group: int | None = 4
    ema_half_life_kimg: float = 10.0
    ema_rampup: float | None = None
    max_kimg: float = 1.0
    n_samples: int = 16
    max_nan_streak: int = 20
    log_every: int = 10
    check_every: int = 10
    compile: bool = False
    channels_last: bool = True
    fused_adam: bool | None = None
    augment: str = "none"
    ada_p: float = 0.0
    ada_target: float | None = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500.0

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {self.augment!r}")
        if not 0.0 <= self.ada_p <= 1.0 or self.ada_kimg <= 0 or self.ada_interval < 1:
            raise ValueError(
                "need 0 <= ada_p <= 1, ada_kimg > 0 and ada_interval >= 1, got "
                f"ada_p={self.ada_p}, ada_kimg={self.ada_kimg}, ada_interval={self.ada_interval}"
            )

    def as_dict(self) -> dict[str, Any]:
        """Every option by name, in field order (values as given, not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, kw_only=True)
class PriorOptions(GANOptions):
    """``PriorModule``: the StyleGAN2 recipe (``GANOptions``) plus style mixing and sample seeds.

    Args:
        mixing_prob: style-mixing probability (0.9).
        sample_seed: seed of the fixed latents and noise of the sample grids.
    """

    mixing_prob: float = 0.9
    sample_seed: int = 0


@dataclass(frozen=True, kw_only=True)
class FinetuneOptions(GANOptions):
    """``FinetuneModule``: the paper's fine-tuning (the official script's regularizers off).

    Args:
        init: ``"auto"`` (the newest ``prior.pt`` under ``init_root/prior``), a path to an exported
            prior or an official GPEN checkpoint (continues training it, encoder included), or
            ``None`` / ``"none"`` (random decoder: ablations and tests).
        init_root: where ``auto`` looks (the runs root, ``paths.log_dir``).
        init_discriminator: optional separate D file (e.g. the official ``-D`` release).
        lr_ratio: encoder : decoder : D learning rates (100 : 10 : 1; ``lr`` is the encoder's).
        noise_lr: the part whose learning rate trains the decoder's noise-injection scales,
            through which the encoder features enter the prior: ``"decoder"`` (the paper: they
            belong to the prior) or ``"encoder"``. Pre-training on random noise leaves them near
            0 (about 0.003 in a tiny prior), so at the decoder's rate the encoder features reach
            the output slowly; with ``"encoder"`` they also train when ``freeze_prior`` is set.
        adv_weight, content, content_weight, fm_weight: ``L_A`` weight, ``"l1"`` (paper) or
            ``"smooth_l1"`` (official script) and alpha (1), beta of ``L_F`` (0.02).
        id_weight, id_weights: ArcFace identity loss (official script: 1) and the local IR-SE50
            weights (``model_ir_se50.pth``); required when the weight is > 0.
        lpips_weight, lpips_weights, lpips_net: LPIPS loss weight, the local torchvision
            backbone file (with a file, validation also reports LPIPS) and ``"alex"`` | ``"vgg"``.
        fid_weights: local torch-fidelity Inception weights: validation also reports FID.
        freeze_prior: keep the decoder fixed (ablation).
        val_ema: validate and sample with the EMA network (else the trained one).

    ``r1_gamma`` and ``pl_weight`` default to 0 here (the official script: 10 and 2); ``n_samples``
    is the number of faces in the [LQ | output | HQ] grids (from the validation set).
    """

    init: str | None = "auto"
    init_root: str = "outputs"
    init_discriminator: str | None = None
    lr_ratio: tuple[float, float, float] = (100.0, 10.0, 1.0)
    noise_lr: str = "decoder"
    adv_weight: float = 1.0
    content: str = "l1"
    content_weight: float = 1.0
    fm_weight: float = 0.02
    r1_gamma: float = 0.0
    pl_weight: float = 0.0
    id_weight: float = 0.0
    id_weights: str | None = None
    lpips_weight: float = 0.0
    lpips_weights: str | None = None
    lpips_net: str = "alex"
    fid_weights: str | None = None
    freeze_prior: bool = False
    n_samples: int = 8
    val_ema: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.noise_lr not in ("decoder", "encoder"):
            raise ValueError(f"noise_lr must be 'decoder' or 'encoder', got {self.noise_lr!r}")


# stage -> (the module's import path, its options)
STAGES: dict[str, tuple[str, type[GANOptions]]] = {
    "prior": ("gpen_lightning.training.PriorModule", PriorOptions),
    "finetune": ("gpen_lightning.training.FinetuneModule", FinetuneOptions),
}


def stage_node(stage: str) -> dict[str, Any]:
    """The ``module`` config of a training stage at the defaults: ``_target_``, ``model`` (required:
    ``???``) and every option (tuples as lists)."""
    target, options = STAGES[stage]
    defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in options().as_dict().items()}
    return {"_target_": target, "model": "???", **defaults}


def register_configs() -> None:
    """Store ``stage_node`` of each training stage in Hydra's ConfigStore as ``module/<stage>``
    (the stage configs list it first in their defaults). Idempotent."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for stage in STAGES:
        store.store(group="module", name=stage, node=stage_node(stage))
