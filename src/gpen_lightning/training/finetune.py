"""``FinetuneModule``: stage 2 of GPEN, the prior embedded as the decoder of the U-shaped network,
fine-tuned on synthetic LQ/HQ pairs with ``L = L_A + alpha L_C + beta L_F`` (the paper's loss)."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torchmetrics import CatMetric, MeanMetric

from gpen_lightning import losses
from gpen_lightning.io import latest_file
from gpen_lightning.losses import networks
from gpen_lightning.losses.phases import FinetuneLoss
from gpen_lightning.metrics.fid import FidStatistics, frechet_distance, load_inception
from gpen_lightning.metrics.scorer import Scorer
from gpen_lightning.options import FinetuneOptions
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
        **options: the fields of ``gpen_lightning.options.FinetuneOptions`` (documented there;
            the stage config ``stage=finetune`` starts from the same defaults): the prior to start
            from (``init``), learning rates, loss weights and their networks, the ablation switch
            ``freeze_prior``, EMA, stop conditions, sample grids, speed switches.
    """

    sample_nrow = 3  # grids show LQ | output | HQ per row

    def __init__(self, *, model: dict[str, Any], **options: Any) -> None:
        super().__init__()
        opts = FinetuneOptions(**options)
        self.save_hyperparameters({"model": model, **opts.as_dict()})
        arch = dict(model)
        name = arch.pop("name")
        self.gpen: GPEN = build(name, "gpen", **arch)
        self.discriminator = build(name, "discriminator", stddev_group=opts.stddev_group, **arch)
        set_memory_format(self.gpen, self.discriminator, channels_last=opts.channels_last)
        self.g_ema = copy.deepcopy(self.gpen).requires_grad_(False)
        if opts.freeze_prior:
            self.gpen.generator.requires_grad_(False)
            for p in self._noise_scales() if opts.noise_lr == "encoder" else ():
                p.requires_grad_(True)
        e, dec, d = opts.lr_ratio
        self.lrs = {
            "encoder": opts.lr,
            "decoder": opts.lr * dec / e,
            "discriminator": opts.lr * d / e,
        }
        self.loss = self._build_loss(opts)
        # the lazy-regularization corrections of the Adam settings (each G group's lr scales by
        # the path-length ratio, D's by the R1 ratio)
        betas = tuple(opts.betas)
        self.r1 = losses.LazyRegularization(self.loss.r1_every, self.lrs["discriminator"], betas)
        self.pl = losses.LazyRegularization(self.loss.pl_every, opts.lr, betas)
        # validation: the evaluation's scorer (metrics.scorer) on the same networks; per-image
        # scores averaged (the mean of per-image PSNR, as stage=evaluate reports), FID features
        # gathered across processes
        self.scorer = Scorer(lpips=self.aux.get("lpips"), inception=self.aux.get("fid"))
        self.val_lpips = MeanMetric()
        self.val_psnr, self.val_ssim = MeanMetric(), MeanMetric()
        self.val_psnr_input, self.val_ssim_input = MeanMetric(), MeanMetric()
        self.val_fid_real, self.val_fid_fake = CatMetric(), CatMetric()
        self._initialized = False
        self._samples: tuple[torch.Tensor, torch.Tensor] | None = None

    def _build_loss(self, opts: FinetuneOptions) -> FinetuneLoss:
        """The paper's loss with the optional identity / LPIPS terms; their frozen networks (and
        FID's) go to ``self.aux``, outside the module tree: no checkpoint bloat, no DDP."""
        weights = {"adv": opts.adv_weight, "content": opts.content_weight, "fm": opts.fm_weight}
        self.aux: dict[str, torch.nn.Module] = {}
        if opts.id_weight > 0:
            self.aux["id"] = networks.load_identity(opts.id_weights)
            weights["id"] = opts.id_weight
        if opts.lpips_weight > 0 or opts.lpips_weights:
            self.aux["lpips"] = networks.load_lpips(opts.lpips_weights, opts.lpips_net)
            if opts.lpips_weight > 0:
                weights["lpips"] = opts.lpips_weight
        if opts.fid_weights:
            self.aux["fid"] = load_inception(opts.fid_weights)
        return FinetuneLoss(
            generator=self.gpen,
            discriminator=self.discriminator,
            weights=weights,
            content=opts.content,
            identity=self.aux.get("id"),
            lpips=self.aux.get("lpips"),
            regularization=self.regularization(),
            **compiled(self.gpen, self.discriminator, enabled=opts.compile),
        )

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
        ref = self.scorer.reference(hq01)
        scores, inputs = self.scorer.per_image(out01, ref), self.scorer.per_image(lq01, ref)
        self.val_psnr(scores["psnr"])
        self.val_ssim(scores["ssim"])
        self.val_psnr_input(inputs["psnr"])
        self.val_ssim_input(inputs["ssim"])
        b = lq.shape[0]
        metrics = {
            "val/psnr": self.val_psnr,
            "val/ssim": self.val_ssim,
            "val/psnr_input": self.val_psnr_input,
            "val/ssim_input": self.val_ssim_input,
            "val/l1": (out - hq.float()).abs().mean() / 2,  # on [0, 1]
        }
        if "lpips" in scores:
            self.val_lpips(scores["lpips"])
            metrics["val/lpips"] = self.val_lpips
        if "fid" in self.aux:
            self.val_fid_real.update(self.scorer.features(hq01))
            self.val_fid_fake.update(self.scorer.features(out01))
        self.log_dict(metrics, on_epoch=True, batch_size=b, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if "fid" in self.aux and self.val_fid_fake.update_count:
            real, fake = self.val_fid_real.compute(), self.val_fid_fake.compute()
            if len(fake) > 1:
                fid = frechet_distance(FidStatistics.of(fake.cpu()), FidStatistics.of(real.cpu()))
                self.log("val/fid", fid)
        self.val_fid_real.reset()
        self.val_fid_fake.reset()

    @property
    def trained_generator(self) -> torch.nn.Module:
        """The network G's optimizer trains: the whole GPEN (encoder and decoder)."""
        return self.gpen

    @torch.no_grad()
    def sample_images(self) -> torch.Tensor:
        """[LQ, output, HQ] for the first ``n_samples`` validation faces: (3n, 3, S, S)."""
        if self._samples is None:
            dm = self.trainer.datamodule
            batch = next(iter(dm.val_dataloader()))
            batch = {k: v[: self.hparams.n_samples] for k, v in batch.items()}
            batch = dm.make_pairs(batch, train=False)
            self._samples = (batch["lq"], batch["hq"])
        lq, hq = (x.to(self.device, self.dtype) for x in self._samples)  # 64-true: float64
        with eval_mode(self._net()) as net:
            out = net(lq).float().clamp(-1, 1)
        return torch.stack([lq.float(), out, hq.float()], 1).flatten(0, 1)

    def export_weights(self, path: str | os.PathLike[str]) -> None:
        """``path``: ``{"g_ema", "g", "d", "meta"}`` (ours; ``load_network`` reads it) and, next
        to it, ``<stem>-official.pth``: the EMA GPEN in the official layout, which the official
        demo code loads as it loads a released GPEN-BFR file."""
        self._save_weights(path, "gpen-lightning-gpen")
        path = Path(path)
        export_official(self.g_ema, path.with_name(f"{path.stem}-official.pth"))
