"""``FinetuneModule``: stage 2 of GPEN, the prior embedded as the decoder of the U-shaped network,
fine-tuned on synthetic LQ/HQ pairs with ``L = L_A + alpha L_C + beta L_F`` (the paper's loss)."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Literal

import torch
from torchmetrics import MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from gpen_lightning import losses
from gpen_lightning.io import latest_file
from gpen_lightning.losses import networks
from gpen_lightning.losses.phases import FinetuneLoss
from gpen_lightning.metrics.fid import load_fid
from gpen_lightning.ranges import to_unit
from gpen_lightning.training.base import GANModule, eval_mode
from gpen_lightning.training.fast import compiled, set_memory_format
from gpen_lightning.zoo.generator import Generator
from gpen_lightning.zoo.gpen import GPEN
from gpen_lightning.zoo.official import (
    CheckpointMismatchError,
    export_official,
    load_network,
)
from gpen_lightning.zoo.presets import build

__all__ = ["FinetuneModule", "latest_prior"]

log = logging.getLogger(__name__)


def latest_prior(root: str | os.PathLike[str], model: dict[str, Any] | None = None) -> Path:
    """The newest ``prior.pt`` written by ``stage=prior`` under ``root/prior`` (runs and sweeps);
    with ``model`` (``{"name", "noise_mode", ...}``), the newest one trained for that preset and
    noise mode (the ablations keep one prior per noise mode side by side)."""
    want = {k: model[k] for k in ("name", "noise_mode") if k in model} if model else {}

    def fits(path: Path) -> bool:
        meta = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("meta", {})
        return all(meta.get("model", {}).get(k, v) == v for k, v in want.items())

    found = latest_file(root, "prior", "prior.pt", where=fits if want else None)
    if found is None:
        raise FileNotFoundError(
            f"module.init=auto found no prior{f' for {want}' if want else ''} under "
            f"{Path(root, 'prior')}: run `make train` (python -m gpen_lightning stage=prior"
            f"{' model.noise_mode=' + want['noise_mode'] if 'noise_mode' in want else ''}) first, "
            "or pass module.init=PATH (a prior.pt, or an official GPEN .pth to continue training "
            "it), or module.init=none"
        )
    return found


class FinetuneModule(GANModule):
    """Fine-tune GPEN: encoder (fresh) + decoder (the prior) against the prior's discriminator.

    Args:
        model: zoo preset, ``{"name": ..., **field overrides}``.
        init: ``"auto"`` (the newest ``prior.pt`` under ``init_root/prior``), a path to an exported
            prior or an official GPEN checkpoint (continues training it, encoder included), or
            ``None`` / ``"none"`` (random decoder: ablations and tests).
        init_root: where ``auto`` looks (the runs root, ``paths.log_dir``).
        init_discriminator: optional separate D file (e.g. the official ``-D`` release).
        lr, lr_ratio, betas: encoder lr (0.002) and encoder : decoder : D (100 : 10 : 1); Adam.
        noise_lr: the part whose learning rate trains the decoder's noise-injection scales,
            through which the encoder features enter the prior: ``"decoder"`` (the paper: they
            belong to the prior) or ``"encoder"``. Pre-training on random noise leaves them near
            0 (about 0.003 in a tiny prior), so at the decoder's rate the encoder features reach
            the output slowly; with ``"encoder"`` they also train when ``freeze_prior`` is set.
        adv_weight, content, content_weight, fm_weight: ``L_A`` weight, ``"l1"`` (paper) or
            ``"smooth_l1"`` (official script) and alpha (1), beta of ``L_F`` (0.02).
        r1_gamma, r1_every, pl_weight, pl_every, pl_decay, pl_batch_shrink: optional
            regularizers of the official script (off: 0).
        id_weight, id_weights: ArcFace identity loss (official script: 1) and the local IR-SE50
            weights (``model_ir_se50.pth``); required when the weight is > 0.
        lpips_weight, lpips_weights, lpips_net: LPIPS loss weight and the local torchvision
            backbone file; with a file, validation also reports LPIPS.
        fid_weights: local torch-fidelity Inception weights: validation also reports FID.
        freeze_prior: keep the decoder fixed (ablation).
        stddev_group: minibatch-stddev group of D.
        ema_half_life_kimg, ema_rampup: EMA of the whole GPEN.
        max_kimg, max_nan_streak: stop conditions (see ``GANModule``).
        n_samples: faces in the [LQ | output | HQ] grids (from the validation set).
        val_ema: validate and sample with the EMA network (else the trained one).
        log_every, check_every, compile, channels_last, fused_adam: as ``PriorModule``.
    """

    sample_nrow = 3  # grids show LQ | output | HQ per row

    def __init__(
        self,
        *,
        model: dict[str, Any],
        init: str | None = "auto",
        init_root: str = "outputs",
        init_discriminator: str | None = None,
        lr: float = 0.002,
        lr_ratio: tuple[float, float, float] = (100.0, 10.0, 1.0),
        noise_lr: Literal["decoder", "encoder"] = "decoder",
        betas: tuple[float, float] = (0.0, 0.99),
        adv_weight: float = 1.0,
        content: Literal["l1", "smooth_l1"] = "l1",
        content_weight: float = 1.0,
        fm_weight: float = 0.02,
        r1_gamma: float = 0.0,
        r1_every: int = 16,
        pl_weight: float = 0.0,
        pl_every: int = 4,
        pl_decay: float = 0.01,
        pl_batch_shrink: int = 2,
        id_weight: float = 0.0,
        id_weights: str | None = None,
        lpips_weight: float = 0.0,
        lpips_weights: str | None = None,
        lpips_net: str = "alex",
        fid_weights: str | None = None,
        freeze_prior: bool = False,
        stddev_group: int | None = 4,
        ema_half_life_kimg: float = 10.0,
        ema_rampup: float | None = None,
        max_kimg: float = 1.0,
        max_nan_streak: int = 20,
        n_samples: int = 8,
        val_ema: bool = True,
        log_every: int = 10,
        check_every: int = 10,
        compile: bool = False,
        channels_last: bool = True,
        fused_adam: bool | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        arch = dict(model)
        name = arch.pop("name")
        self.gpen: GPEN = build(name, "gpen", **arch)
        self.discriminator = build(name, "discriminator", stddev_group=stddev_group, **arch)
        set_memory_format(self.gpen, self.discriminator, channels_last=channels_last)
        self.g_ema = copy.deepcopy(self.gpen).requires_grad_(False)
        self.trained_generator = self.gpen
        if noise_lr not in ("decoder", "encoder"):
            raise ValueError(f"noise_lr must be 'decoder' or 'encoder', got {noise_lr!r}")
        if freeze_prior:
            self.gpen.generator.requires_grad_(False)
            for p in self._noise_scales() if noise_lr == "encoder" else ():
                p.requires_grad_(True)
        e, dec, d = lr_ratio
        self.lrs = {"encoder": lr, "decoder": lr * dec / e, "discriminator": lr * d / e}
        weights = {"adv": adv_weight, "content": content_weight, "fm": fm_weight}
        # Frozen loss/metric networks live outside the module tree: no checkpoint bloat, no DDP.
        self.aux: dict[str, torch.nn.Module] = {}
        if id_weight > 0:
            self.aux["id"] = networks.load_identity(id_weights)
            weights["id"] = id_weight
        if lpips_weight > 0 or lpips_weights:
            self.aux["lpips"] = networks.load_lpips(lpips_weights, lpips_net)
            if lpips_weight > 0:
                weights["lpips"] = lpips_weight
        if fid_weights:
            self.aux["fid"] = load_fid(fid_weights)
        self.loss = FinetuneLoss(
            generator=self.gpen,
            discriminator=self.discriminator,
            weights=weights,
            content=content,
            identity=self.aux.get("id"),
            lpips=self.aux.get("lpips"),
            regularization=self.regularization(),
            **compiled(self.gpen, self.discriminator, enabled=compile),
        )
        # the lazy-regularization corrections of the Adam settings (each G group's lr scales by
        # the path-length ratio, D's by the R1 ratio)
        self.r1 = losses.LazyRegularization(
            self.loss.r1_every, self.lrs["discriminator"], tuple(betas)
        )
        self.pl = losses.LazyRegularization(self.loss.pl_every, lr, tuple(betas))
        self.val_lpips = MeanMetric()
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.val_psnr_input = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.val_ssim_input = StructuralSimilarityIndexMeasure(data_range=1.0)
        self._initialized = False
        self._samples: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- initialisation from a prior or an official checkpoint --------------------------------
    def _apply(self, fn, recurse: bool = True):
        """Device and dtype moves (``.to``, ``.cuda``, ``.half``) reach the frozen loss/metric
        networks too, whenever Lightning makes them (it calls ``setup()`` before moving the
        module, and moves it back after ``validate_first``)."""
        super()._apply(fn, recurse)
        for net in getattr(self, "aux", {}).values():
            net._apply(fn)  # (a torchmetrics Metric takes other positional arguments)
        return self

    def setup(self, stage: str) -> None:
        resuming = self._trainer is not None and self.trainer.ckpt_path is not None
        if not self._initialized and not resuming:
            self.init_weights()

    def init_weights(self) -> str | None:
        """Load the decoder and D from ``init`` (see the class docs); return the source used."""
        self._initialized = True
        init = self.hparams.init
        if init is None or str(init).lower() == "none":
            return None
        path = (
            latest_prior(self.hparams.init_root, self.hparams.model)
            if init == "auto"
            else Path(init)
        )
        net = load_network(path)
        try:
            if isinstance(net, Generator):
                self.gpen.generator.load_state_dict(net.state_dict())
                what = "prior -> decoder"
            elif isinstance(net, GPEN):
                self.gpen.load_state_dict(net.state_dict())
                what = "GPEN (encoder and decoder)"
            else:
                raise CheckpointMismatchError(f"{path} holds a discriminator, not a prior or GPEN")
        except RuntimeError as err:
            raise CheckpointMismatchError(
                f"{path} does not fit model {self.hparams.model} (noise_mode, size and preset must "
                f"match the prior's): {str(err).splitlines()[0]}"
            ) from None
        explicit = self.hparams.init_discriminator
        try:
            disc = load_network(explicit or path, part="discriminator")
            self.discriminator.load_state_dict(disc.state_dict())
            what += ", discriminator"
        except (KeyError, CheckpointMismatchError):
            if explicit:  # asked for by name: a wrong file is an error
                raise
            log.warning(
                "%s has no discriminator; D starts from random weights (give the official "
                "-D file with module.init_discriminator=PATH)",
                path,
            )
        self.g_ema.load_state_dict(self.gpen.state_dict())
        log.info("initialised %s from %s", what, path)
        return str(path)

    # -- optimisation ----------------------------------------------------------------------
    def _noise_scales(self) -> list[torch.nn.Parameter]:
        """The decoder's noise-injection scales: the gates through which encoder features enter."""
        gen = self.gpen.generator
        return [p for n, p in gen.named_parameters() if n.endswith("noise.weight")]

    def configure_optimizers(self):
        g = self.gpen
        enc = [p for m in (*g.encoder, g.final_linear) for p in m.parameters()]
        bridge = self._noise_scales() if self.hparams.noise_lr == "encoder" else []
        groups = [{"params": enc + bridge, "lr": self.lrs["encoder"], "name": "encoder"}]
        if not self.hparams.freeze_prior:
            skip = {id(p) for p in bridge}
            dec = [p for p in g.generator.parameters() if id(p) not in skip]
            groups.append({"params": dec, "lr": self.lrs["decoder"], "name": "decoder"})
        for group in groups:
            group["lr"] *= self.pl.ratio
        g_opt = self._adam(groups, betas=self.pl.adam_kwargs()["betas"])
        d_opt = self._adam(self.discriminator.parameters(), **self.r1.adam_kwargs())
        return g_opt, d_opt

    # -- validation, samples, export --------------------------------------------------------
    def _net(self) -> GPEN:
        return self.g_ema if self.hparams.val_ema else self.gpen

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        lq, hq = batch["lq"], batch["hq"]
        out = self._net()(lq).float().clamp(-1, 1)
        out01, lq01, hq01 = (to_unit(x.float()) for x in (out, lq, hq))
        self.val_psnr(out01, hq01)
        self.val_ssim(out01, hq01)
        self.val_psnr_input(lq01, hq01)
        self.val_ssim_input(lq01, hq01)
        b = lq.shape[0]
        metrics = {
            "val/psnr": self.val_psnr,
            "val/ssim": self.val_ssim,
            "val/psnr_input": self.val_psnr_input,
            "val/ssim_input": self.val_ssim_input,
            "val/l1": (out - hq.float()).abs().mean() / 2,  # on [0, 1]
        }
        if "lpips" in self.aux:
            self.val_lpips(self.aux["lpips"](out, hq.float()).flatten())
            metrics["val/lpips"] = self.val_lpips
        if "fid" in self.aux:
            self.aux["fid"].update(hq01, real=True)
            self.aux["fid"].update(out01, real=False)
        self.log_dict(metrics, on_epoch=True, batch_size=b, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        fid = self.aux.get("fid")
        if fid is not None and fid.fake_features_num_samples > 1:
            self.log("val/fid", fid.compute().float())
            fid.reset()

    @torch.no_grad()
    def sample_images(self) -> torch.Tensor:
        """[LQ, output, HQ] for the first ``n_samples`` validation faces: (3n, 3, S, S)."""
        if self._samples is None:
            dm = self.trainer.datamodule
            batch = next(iter(dm.val_dataloader()))
            batch = {k: v[: self.hparams.n_samples] for k, v in batch.items()}
            batch = dm.make_pairs(batch, train=False)
            self._samples = (batch["lq"], batch["hq"])
        lq, hq = (x.to(self.device) for x in self._samples)
        with eval_mode(self._net()) as net:
            out = net(lq).float().clamp(-1, 1)
        return torch.stack([lq.float(), out, hq.float()], 1).flatten(0, 1)

    def export_weights(self, path: str | os.PathLike[str]) -> None:
        """``path``: ``{"g_ema", "g", "d", "meta"}`` (ours; ``load_network`` reads it) and, next
        to it, ``<stem>-official.pth``: the EMA GPEN in the official layout, which the official
        demo code loads as it loads a released GPEN-BFR file."""
        self._save_weights(path, "gpen-lightning-gpen", self.gpen)
        path = Path(path)
        export_official(self.g_ema, path.with_name(f"{path.stem}-official.pth"))
