"""Fine-tuning objectives of GPEN: ``L = L_A + alpha L_C + beta L_F``.

``L_A`` is ``gan.g_nonsaturating_loss``; this module holds the content loss ``L_C`` and the
feature-matching loss ``L_F`` on the discriminator's intermediate features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from gpen_lightning.losses.networks import face_crop_112

__all__ = ["content_loss", "feature_matching_loss", "identity_loss"]


def content_loss(
    output: torch.Tensor,
    target: torch.Tensor,
    *,
    kind: Literal["l1", "smooth_l1"] = "l1",
) -> torch.Tensor:
    """Pixel loss between output and ground truth (B, 3, S, S): the paper's L1 (``l1``) or the
    official script's smooth-L1 (``smooth_l1``, beta 1). Mean over all elements."""
    if kind == "l1":
        return F.l1_loss(output.float(), target.float())
    if kind == "smooth_l1":
        return F.smooth_l1_loss(output.float(), target.float())
    raise ValueError(f"content loss must be 'l1' or 'smooth_l1', got {kind!r}")


def feature_matching_loss(
    fake_features: Sequence[torch.Tensor], real_features: Sequence[torch.Tensor]
) -> torch.Tensor:
    """L_F: sum over the T discriminator layers of the mean |D_t(output) - D_t(target)|.

    The real features are the target side and carry no gradient (detached here).
    """
    if len(fake_features) != len(real_features):
        raise ValueError(f"{len(fake_features)} vs {len(real_features)} feature maps")
    return sum(
        (F.l1_loss(f.float(), r.detach().float()) for f, r in zip(fake_features, real_features)),
        start=torch.zeros((), device=fake_features[0].device),
    )


def identity_loss(
    embed: torch.nn.Module, output: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """1 - cos(ArcFace(output), ArcFace(target)), batch mean; faces FFHQ-aligned in [-1, 1].

    ``embed`` maps the 112x112 crop to unit embeddings (``networks.IRSE``); the target side is
    detached.
    """
    e_out = embed(face_crop_112(output.float()))
    with torch.no_grad():
        e_target = embed(face_crop_112(target.float()))
    return (1 - (e_out * e_target).sum(1)).mean()
