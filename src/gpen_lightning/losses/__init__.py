"""Training objectives, kept out of the LightningModules: pure functions of tensors and modules.

``gan``: the StyleGAN2 recipe of the prior stage (non-saturating logistic loss, lazy R1, path-length
regularization, style-mixing latents) and its lazy-regularization optimizer correction.
``phases``: the loss objects of both stages (phases Dmain, Dreg, Gmain, Greg with their weights).
``augment``: adaptive discriminator augmentation (StyleGAN2-ADA's pipe and p controller).
``restoration``: the fine-tuning losses (content L1 / smooth-L1, discriminator feature matching,
ArcFace identity). ``networks``: the pretrained networks of the optional losses (IR-SE ArcFace,
LPIPS), loaded from local files only (the FID network is in ``gpen_lightning.metrics.fid``).
"""

from gpen_lightning.io import MissingWeightsError
from gpen_lightning.losses.augment import AugmentPipe, ada_adjust
from gpen_lightning.losses.gan import (
    LazyRegularization,
    d_logistic_loss,
    g_nonsaturating_loss,
    mixing_latents,
    path_length_penalty,
    r1_penalty,
)
from gpen_lightning.losses.phases import FinetuneLoss, GANLoss, PriorLoss
from gpen_lightning.losses.restoration import content_loss, feature_matching_loss, identity_loss

__all__ = [
    "AugmentPipe",
    "ada_adjust",
    "FinetuneLoss",
    "GANLoss",
    "PriorLoss",
    "LazyRegularization",
    "MissingWeightsError",
    "content_loss",
    "d_logistic_loss",
    "feature_matching_loss",
    "g_nonsaturating_loss",
    "identity_loss",
    "mixing_latents",
    "path_length_penalty",
    "r1_penalty",
]
