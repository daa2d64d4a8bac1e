"""Training objectives, kept out of the LightningModules: pure functions of tensors and modules.

``gan``: the StyleGAN2 recipe of the prior stage (non-saturating logistic loss, lazy R1, path-length
regularization, style-mixing latents) and its lazy-regularization optimizer correction.
"""

from gpen_lightning.losses.gan import (
    LazyRegularization,
    d_logistic_loss,
    g_nonsaturating_loss,
    mixing_latents,
    path_length_penalty,
    r1_penalty,
)

__all__ = [
    "LazyRegularization",
    "d_logistic_loss",
    "g_nonsaturating_loss",
    "mixing_latents",
    "path_length_penalty",
    "r1_penalty",
]
