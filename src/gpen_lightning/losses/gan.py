"""The StyleGAN2 objectives used to pre-train the GPEN prior.

Every function takes an optional ``scaler`` (a ``torch.amp.GradScaler``, as used by ``16-mixed``):
the inner ``autograd.grad`` of R1 and path length then runs on the scaled output so fp16 gradients
do not underflow, and is unscaled before the penalty is formed; the result is the same penalty as
without a scaler. Under ``bf16-mixed`` / fp32 pass ``None``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import autograd

from gpen_lightning.zoo.generator import mixing_crossover
from gpen_lightning.zoo.ops import fp32

__all__ = [
    "LazyRegularization",
    "d_logistic_loss",
    "g_nonsaturating_loss",
    "mixing_latents",
    "path_length_penalty",
    "r1_penalty",
]


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator logistic loss: softplus(D(fake)) + softplus(-D(real)), batch mean."""
    return F.softplus(fp32(fake_logits)).mean() + F.softplus(-fp32(real_logits)).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: softplus(-D(G(z))), batch mean."""
    return F.softplus(-fp32(fake_logits)).mean()


def _grad(
    output: torch.Tensor, inputs: torch.Tensor, scaler: torch.amp.GradScaler | None
) -> torch.Tensor:
    """d sum(output) / d inputs with a graph (for a penalty), through ``scaler`` if given."""
    out = fp32(output).sum()
    if scaler is not None and scaler.is_enabled():
        scale = scaler.get_scale()
        (grad,) = autograd.grad(scaler.scale(out), inputs, create_graph=True)
        return fp32(grad) / scale
    (grad,) = autograd.grad(out, inputs, create_graph=True)
    return fp32(grad)


def r1_penalty(
    real_logits: torch.Tensor,
    real_images: torch.Tensor,
    *,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """R1: E[ ||d D(x) / d x||^2 ] over reals x (B, C, H, W) that ``require_grad``. Scalar.

    Multiply by gamma / 2 (and by the lazy interval) to form the loss.
    """
    grad = _grad(real_logits, real_images, scaler)
    return grad.pow(2).flatten(1).sum(1).mean()


def path_length_penalty(
    images: torch.Tensor,
    latents: torch.Tensor,
    mean_path_length: torch.Tensor,
    *,
    decay: float = 0.01,
    scaler: torch.amp.GradScaler | None = None,
    generator: torch.Generator | None = None,
    probe: torch.Tensor | None = None,
    reduce_mean=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Path-length regularization of StyleGAN2.

    Args:
        images: G output (B, 3, H, W) produced from ``latents``.
        latents: per-layer w (B, L, D) in the graph of ``images``.
        mean_path_length: the running mean a (scalar tensor); not modified.
        decay: EMA rate of the running mean.
        scaler: see the module docstring.
        generator: RNG for the image-space probe y ~ N(0, I) / sqrt(H W).
        probe: the probe itself, N(0, I) draws shaped like ``images`` (then scaled here by
            1 / sqrt(H W)); e.g. keyed per sample (``gpen_lightning.keyed``).
        reduce_mean: optional callable averaging a scalar over processes (DDP), so every rank
            keeps the same running mean.

    Returns:
        (penalty, path_lengths (B,), new running mean): penalty = mean (|J^T y| - a)^2, scalar.
    """
    h, w = images.shape[-2:]
    images = fp32(images)  # one conversion (bf16-mixed), float64 kept
    if probe is None:
        probe = torch.randn(
            images.shape, device=images.device, dtype=images.dtype, generator=generator
        )
    probe = probe.to(images.dtype) / math.sqrt(h * w)
    grad = _grad(images * probe, latents, scaler)  # (B, L, D)
    lengths = grad.pow(2).sum(2).mean(1).sqrt()  # (B,)
    batch_mean = lengths.detach().mean()
    if reduce_mean is not None:
        batch_mean = reduce_mean(batch_mean)
    mean_path_length = fp32(mean_path_length)
    new_mean = mean_path_length.lerp(batch_mean.to(mean_path_length.dtype), decay)
    penalty = (lengths - new_mean).pow(2).mean()
    return penalty, lengths.detach(), new_mean.detach()


def mixing_latents(
    batch: int,
    style_dim: int,
    *,
    prob: float,
    n_latent: int,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    rng: random.Random | None = None,
) -> tuple[list[torch.Tensor], int | None]:
    """Latents for one generator call with style mixing probability ``prob``.

    Returns ``([z], None)`` or, with probability ``prob``, ``([z1, z2], inject_index)`` where the
    crossover layer is uniform in [1, n_latent - 1]. The coin and the crossover are host draws
    from ``rng`` (default: Python's global ``random``, which ``seed_everything`` seeds), so no
    value is read back from the device; the latents are drawn on ``device`` from ``generator``.
    """
    rng = rng or random
    if prob > 0 and rng.random() < prob:
        z = torch.randn(2, batch, style_dim, device=device, generator=generator)
        return [z[0], z[1]], mixing_crossover(n_latent, rng)
    return [torch.randn(batch, style_dim, device=device, generator=generator)], None


@dataclass(frozen=True)
class LazyRegularization:
    """Adam settings corrected for a regularizer applied every ``interval`` minibatches.

    StyleGAN2: with ``ratio = k / (k + 1)``, lr -> lr * ratio and betas -> betas ** ratio; the
    penalty itself is multiplied by k when it runs.
    """

    interval: int
    lr: float
    betas: tuple[float, float] = (0.0, 0.99)

    @property
    def ratio(self) -> float:
        return self.interval / (self.interval + 1) if self.interval > 0 else 1.0

    def adam_kwargs(self) -> dict:
        r = self.ratio
        return {"lr": self.lr * r, "betas": (self.betas[0] ** r, self.betas[1] ** r)}

    def due(self, step: int) -> bool:
        """Whether the regularizer runs on minibatch ``step`` (0-based)."""
        return self.interval > 0 and step % self.interval == 0
