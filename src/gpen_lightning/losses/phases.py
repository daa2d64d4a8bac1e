"""The four training phases of both GPEN stages as loss objects (StyleGAN2-ADA's ``StyleGAN2Loss``
layout): ``d_main`` (logistic loss), ``d_reg`` (lazy R1 every ``r1_every`` minibatches),
``g_main`` (the stage's generator objective), ``g_reg`` (lazy path length every ``pl_every``).

A loss object holds references to the networks and the weights of every term; each phase method
takes the batch (and the keywords of ``PhaseLoss``) and returns the weighted scalar to
back-propagate and detached statistics for logging. The LightningModules build their phase
records from these once (``training.base.TrainingPhase``), run backward and step the optimizers;
nothing here reads a value back to the host, so a training step stays asynchronous on a GPU.

Batches from ``FaceDataModule``'s training loader carry per-sample keys (``host_seed``) and their
global minibatch's (``host_batch_seed``): every draw of a phase (latents, noise maps, the mixing
coin, the path-length probe, the augmentations) is keyed by them and the phase's salt, so a
process draws for its samples exactly what one process with the whole global minibatch would. A
batch without keys (made by hand) falls back to the process's own random streams.

With an ``augment`` pipe (``losses.augment.AugmentPipe``: adaptive discriminator augmentation),
every image D sees goes through it with the probability ``augment_p`` the module passes in: the
reals and fakes of ``Dmain``, the reals of ``Dreg`` (R1 is the gradient with respect to the
un-augmented reals, through the pipe), the fakes of ``Gmain`` (and, for feature matching, the
reals with the same draws as the fakes). ``Dmain`` then also returns ``stats["ada_signs"]``
(``[sum of sign(D(real)), count]``) for the module's controller.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import nn

from gpen_lightning.keyed import keyed_normal, keyed_seeds, mix
from gpen_lightning.losses import gan, restoration
from gpen_lightning.losses.augment import (
    AUG_FAKE_D,
    AUG_FAKE_G,
    AUG_REAL,
    AugmentPipe,
    sign_counts,
)
from gpen_lightning.zoo.generator import mixing_crossover

__all__ = ["REGULARIZATION", "FinetuneLoss", "GANLoss", "PhaseLoss", "PhaseOutput", "PriorLoss"]

REGULARIZATION = ("r1_gamma", "r1_every", "pl_weight", "pl_every", "pl_decay", "pl_batch_shrink")
PhaseOutput = tuple[torch.Tensor, dict[str, torch.Tensor]]
# every phase method: loss(batch, *, scaler=None, pl_mean=None, reduce_mean=None, augment_p=None)
# -> PhaseOutput (``scaler``: the fp16 GradScaler for the penalties' inner gradients; ``pl_mean``:
# the running path-length mean, its update returned as ``stats["pl_mean"]``; ``reduce_mean``: a
# scalar's mean over processes; ``augment_p``: the augmentation probability, a 0-d tensor). A
# phase ignores the keywords it does not use.
PhaseLoss = Callable[..., PhaseOutput]
# the salts of each phase's draws: mix(sample or minibatch seed, salt)
D_FAKE, G_MAIN, PL_SAMPLE, PL_PROBE = 10, 11, 12, 13


class GANLoss:
    """What the two stages share: the D logistic loss, lazy R1 and lazy path length.

    Args:
        generator: the trained network (prior ``Generator`` or ``GPEN``).
        discriminator: its ``Discriminator``.
        regularization: the lazy regularizers, keys ``REGULARIZATION``: ``r1_gamma`` and
            ``r1_every`` (R1 weight and interval in minibatches; gamma 0 turns it off),
            ``pl_weight``, ``pl_every``, ``pl_decay``, ``pl_batch_shrink`` (path-length weight,
            interval, running-mean rate and batch divisor; weight 0 turns it off).
        g_forward, d_forward: optional replacements of the networks' calls in the main phases
            (e.g. ``torch.compile`` of them); the regularization phases always run the eager
            modules, whose double backward every PyTorch backend supports.
        augment: the augmentation pipe of every image D sees (None: off; see the module doc).
    """

    def __init__(
        self,
        *,
        generator: nn.Module,
        discriminator: nn.Module,
        regularization: Mapping[str, float],
        g_forward: Callable | None = None,
        d_forward: Callable | None = None,
        augment: AugmentPipe | None = None,
    ) -> None:
        if set(regularization) != set(REGULARIZATION):
            raise ValueError(f"regularization needs exactly {REGULARIZATION}, got {regularization}")
        r = dict(regularization)
        self.G, self.D = generator, discriminator
        self.g_main_forward = generator if g_forward is None else g_forward
        self.d_main_forward = discriminator if d_forward is None else d_forward
        self.r1_gamma, self.pl_weight = r["r1_gamma"], r["pl_weight"]
        self.r1_every = int(r["r1_every"]) if self.r1_gamma > 0 else 0
        self.pl_every = int(r["pl_every"]) if self.pl_weight > 0 else 0
        self.pl_decay, self.pl_batch_shrink = r["pl_decay"], int(r["pl_batch_shrink"])
        self.augment = augment

    # -- the stage-specific parts ------------------------------------------------------------
    def real(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The real images D sees: (B, 3, S, S), in D's activation layout (the fakes' one), so
        that both go through one compiled graph."""
        fmt = getattr(self.D, "memory_format", None)
        hq = batch["hq"]
        return hq if fmt is None else hq.contiguous(memory_format=fmt)

    def d_view(
        self, images: torch.Tensor, batch: dict, salt: int, p: torch.Tensor | None
    ) -> torch.Tensor:
        """What D sees of ``images`` (B, 3, S, S): augmented with probability ``p`` (keyed per
        sample by ``salt``) when there is a pipe and a ``p``, in D's activation layout."""
        if self.augment is None or p is None:
            return images
        seeds = keyed_seeds(batch.get("host_seed"), salt, len(images))
        out = self.augment(images, p, seeds=seeds)
        fmt = getattr(self.D, "memory_format", None)
        return out if fmt is None else out.contiguous(memory_format=fmt)

    def fake(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Generated images for the D phase, without a graph: (B, 3, S, S)."""
        raise NotImplementedError

    def g_main(self, batch: dict[str, torch.Tensor], **_) -> PhaseOutput:
        raise NotImplementedError

    def pl_sample(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and the per-layer latents (B', n_latent, D) they came from, on a shrunk batch."""
        raise NotImplementedError

    # -- shared phases ---------------------------------------------------------------------------
    def d_main(
        self, batch: dict[str, torch.Tensor], *, augment_p: torch.Tensor | None = None, **_
    ) -> PhaseOutput:
        with torch.no_grad():
            fake = self.fake(batch)
        real_logits = self.d_main_forward(self.d_view(self.real(batch), batch, AUG_REAL, augment_p))
        fake_logits = self.d_main_forward(self.d_view(fake, batch, AUG_FAKE_D, augment_p))
        loss = gan.d_logistic_loss(real_logits, fake_logits)
        stats = {"train/loss_d": loss.detach()}
        if self.augment is not None:
            stats["ada_signs"] = sign_counts(real_logits)
        return loss, stats

    def d_reg(
        self,
        batch: dict[str, torch.Tensor],
        *,
        scaler: torch.amp.GradScaler | None = None,
        augment_p: torch.Tensor | None = None,
        **_,
    ) -> PhaseOutput:
        """gamma / 2 * interval * R1 (lazy regularization)."""
        real = self.real(batch).detach().requires_grad_(True)
        logits = self.D(self.d_view(real, batch, AUG_REAL, augment_p))
        r1 = gan.r1_penalty(logits, real, scaler=scaler)
        # 0 * logits keeps every D output in the graph (DDP sees all parameters used)
        loss = self.r1_gamma / 2 * self.r1_every * r1 + 0 * logits.sum()
        return loss, {"train/r1": r1.detach()}

    def g_reg(
        self,
        batch: dict[str, torch.Tensor],
        *,
        pl_mean: torch.Tensor | None = None,
        scaler: torch.amp.GradScaler | None = None,
        reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **_,
    ) -> PhaseOutput:
        """weight * interval * (|J^T y| - a)^2 (lazy path-length regularization)."""
        if pl_mean is None:
            raise ValueError("the path-length phase needs the running mean (pl_mean=)")
        images, latents = self.pl_sample(batch)
        probe = None
        if "host_seed" in batch:  # keyed per sample (see the module docstring)
            seeds = keyed_seeds(batch["host_seed"], PL_PROBE, len(images))
            shape = tuple(images.shape[1:])
            dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
            (probe,) = keyed_normal(seeds, [shape], device=images.device, dtype=dtype)
        penalty, lengths, new_mean = gan.path_length_penalty(
            images,
            latents,
            pl_mean,
            decay=self.pl_decay,
            scaler=scaler,
            probe=probe,
            reduce_mean=reduce_mean,
        )
        loss = self.pl_weight * self.pl_every * penalty + 0 * images.sum()
        stats = {
            "train/pl_penalty": penalty.detach(),
            "train/path_length": lengths.mean(),
            "pl_mean": new_mean,
        }
        return loss, stats

    def _shrunk(self, batch_size: int) -> int:
        return max(1, batch_size // self.pl_batch_shrink)


class PriorLoss(GANLoss):
    """Stage 1, the StyleGAN2 recipe: G(z) with style mixing against D, non-saturating loss.

    Args (besides ``GANLoss``'s):
        mixing_prob: style-mixing probability of the latents (0.9).
    """

    def __init__(self, *, mixing_prob: float = 0.9, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mixing_prob = mixing_prob

    def latents(
        self, batch: dict, salt: int, n: int | None = None
    ) -> tuple[list[torch.Tensor], int | None, list[torch.Tensor] | None]:
        """``(zs, crossover, noise)`` for the first ``n`` samples of ``batch`` (default all), on
        the networks' device. Keyed batches: the mixing coin and crossover from the global
        minibatch's seed, each sample's z (one or two) and noise maps from its own; otherwise
        fresh draws (the coin on the host) and the generator's own noise."""
        device = self.G.w_avg.device
        n = len(batch["hq"]) if n is None else n
        if "host_seed" not in batch:
            zs, cut = gan.mixing_latents(
                n, self.G.style_dim, prob=self.mixing_prob, n_latent=self.G.n_latent, device=device
            )
            return zs, cut, None
        coin = random.Random(mix(batch["host_batch_seed"][0], salt))
        mixing = self.mixing_prob > 0 and coin.random() < self.mixing_prob
        cut = mixing_crossover(self.G.n_latent, coin) if mixing else None
        k = 2 if mixing else 1
        shapes = [(self.G.style_dim,)] * k + [s[1:] for s in self.G.noise_shapes(1)]
        seeds = keyed_seeds(batch["host_seed"], salt, n)
        draws = keyed_normal(seeds, shapes, device=device, dtype=self.G.w_avg.dtype)
        return draws[:k], cut, draws[k:]

    def fake(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        zs, cut, noise = self.latents(batch, D_FAKE)
        return self.g_main_forward(zs, inject_index=cut, noise=noise)

    def g_main(
        self, batch: dict[str, torch.Tensor], *, augment_p: torch.Tensor | None = None, **_
    ) -> PhaseOutput:
        zs, cut, noise = self.latents(batch, G_MAIN)
        fake = self.g_main_forward(zs, inject_index=cut, noise=noise)
        loss = gan.g_nonsaturating_loss(
            self.d_main_forward(self.d_view(fake, batch, AUG_FAKE_G, augment_p))
        )
        return loss, {"train/loss_g": loss.detach()}

    def pl_sample(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        zs, cut, noise = self.latents(batch, PL_SAMPLE, self._shrunk(len(batch["hq"])))
        return self.G(zs, inject_index=cut, noise=noise, return_latents=True)


class FinetuneLoss(GANLoss):
    """Stage 2: ``L = w_A L_A + alpha L_C + beta L_F`` (+ optional identity and LPIPS terms) for
    GPEN(LQ) against HQ, the discriminator trained on HQ vs GPEN(LQ).

    Args (besides ``GANLoss``'s):
        weights: ``{"adv", "content", "fm"}`` and optionally ``"id"``, ``"lpips"``.
        content: ``"l1"`` (paper) or ``"smooth_l1"`` (official script).
        identity: the ArcFace embedding network (needed with an ``"id"`` weight).
        lpips: the LPIPS network (needed with an ``"lpips"`` weight).
    """

    def __init__(
        self,
        *,
        weights: dict[str, float],
        content: Literal["l1", "smooth_l1"] = "l1",
        identity: nn.Module | None = None,
        lpips: nn.Module | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        for key, net in (("id", identity), ("lpips", lpips)):
            if key in weights and net is None:
                raise ValueError(f"a {key!r} loss weight needs its network")
        self.weights, self.content = dict(weights), content
        self.identity, self.lpips = identity, lpips

    def fake(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.g_main_forward(batch["lq"])

    def generator_terms(
        self, batch: dict[str, torch.Tensor], *, augment_p: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The unweighted terms of the generator loss and the output GPEN(LQ) (B, 3, S, S).
        With augmentation, the output and (for feature matching) HQ get the same draws."""
        lq, hq = batch["lq"], batch["hq"]
        out = self.g_main_forward(lq)
        seen = self.d_view(out, batch, AUG_FAKE_G, augment_p)
        terms = {}
        if self.weights.get("fm", 0) != 0:
            logits, fake_feats = self.d_main_forward(seen, return_features=True)
            with torch.no_grad():
                real = self.d_view(self.real(batch), batch, AUG_FAKE_G, augment_p)
                _, real_feats = self.d_main_forward(real, return_features=True)
            terms["fm"] = restoration.feature_matching_loss(fake_feats, real_feats)
        else:  # no feature matching (the official script): no D pass over the HQ faces
            logits = self.d_main_forward(seen)
        terms["adv"] = gan.g_nonsaturating_loss(logits)
        terms["content"] = restoration.content_loss(out, hq, kind=self.content)
        if "id" in self.weights:
            terms["id"] = restoration.identity_loss(self.identity, out, hq)
        if "lpips" in self.weights:
            terms["lpips"] = self.lpips(out.float(), hq.float()).mean()
        return terms, out

    def g_main(
        self, batch: dict[str, torch.Tensor], *, augment_p: torch.Tensor | None = None, **_
    ) -> PhaseOutput:
        terms, _ = self.generator_terms(batch, augment_p=augment_p)
        total = sum(self.weights[k] * v for k, v in terms.items())
        stats = {"train/loss_g": total.detach()}
        stats.update({f"train/{k}": v.detach() for k, v in terms.items()})
        return total, stats

    def pl_sample(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        lq = batch["lq"]
        return self.G(lq[: self._shrunk(len(lq))], return_latents=True)
