"""Adaptive discriminator augmentation (StyleGAN2-ADA, Karras et al. 2020), on the device.

``AugmentPipe`` is the paper's ``bgc`` pipeline: pixel blitting (x-flip, 90-degree rotations,
integer translation), general geometric transforms (isotropic scaling, rotation, anisotropic
scaling, fractional translation: one affine warp with ``kornia.geometry.transform.warp_affine``,
bilinear, reflection padding) and colour transforms (brightness, contrast, luma flip, hue rotation,
saturation: one 3x4 colour matrix per image). Each transform fires on an image with probability
``p`` (rotations with ``1 - sqrt(1 - p)``, twice, as in the paper); the output is differentiable
with respect to the images (twice: R1 back-propagates through it), and ``p = 0`` returns the input
exactly.

The draws are keyed like every other training draw (``gpen_lightning.keyed``): one batch of
standard normals per sample from ``mix(host_seed, salt)``, uniforms and coins from them through the
normal CDF, compared with ``p`` on the device (no host sync). The reals of ``Dmain`` and ``Dreg``
use the same salt, so a real face is augmented the same way in both phases of a minibatch.

``ada_adjust`` is the paper's controller: ``r_t = E[sign(D(real))]`` over the last ``interval``
minibatches and ``p += sign(r_t - target) * images / (ada_kimg * 1000)``, clamped to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from kornia.geometry.transform import warp_affine

from gpen_lightning.keyed import keyed_normal, keyed_seeds

__all__ = [
    "AUG_FAKE_D",
    "AUG_FAKE_G",
    "AUG_REAL",
    "AugmentPipe",
    "ada_adjust",
    "draws",
    "keyed_seeds",
    "sign_counts",
]

# the salts of the augmentation draws (the phases' own are 10-13): reals (Dmain and Dreg), the
# fakes of Dmain, the fakes (and, with feature matching, the reals) of Gmain
AUG_REAL, AUG_FAKE_D, AUG_FAKE_G = 20, 21, 22

_GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
_COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
# normals per image: geometric 8 coins (two rotations) + 10 parameters, colour 5 coins + 5
_N_GEOMETRIC, _N_DRAWS = 18, 28


@dataclass(frozen=True, kw_only=True)
class AugmentPipe:
    """StyleGAN2-ADA's ``bgc`` augmentations (paper's defaults).

    Args:
        xflip, rotate90, xint, scale, rotate, aniso, xfrac: the geometric transforms'
            probability multipliers (1: fires with probability p, 0: off).
        brightness, contrast, lumaflip, hue, saturation: the colour transforms' multipliers.
        xint_max: integer translation range, a fraction of the image size (0.125).
        scale_std, aniso_std: log2 standard deviations of the scalings (0.2).
        rotate_max: rotation range, a fraction of 180 degrees (1: any angle).
        xfrac_std: fractional translation deviation, a fraction of the size (0.125).
        brightness_std, contrast_std, hue_max, saturation_std: 0.2 (added), 0.5 (log2),
            1 (a fraction of 180 degrees around the luma axis), 1 (log2).
    """

    xflip: float = 1.0
    rotate90: float = 1.0
    xint: float = 1.0
    scale: float = 1.0
    rotate: float = 1.0
    aniso: float = 1.0
    xfrac: float = 1.0
    brightness: float = 1.0
    contrast: float = 1.0
    lumaflip: float = 1.0
    hue: float = 1.0
    saturation: float = 1.0
    xint_max: float = 0.125
    scale_std: float = 0.2
    rotate_max: float = 1.0
    aniso_std: float = 0.2
    xfrac_std: float = 0.125
    brightness_std: float = 0.2
    contrast_std: float = 0.5
    hue_max: float = 1.0
    saturation_std: float = 1.0

    @classmethod
    def only(cls, *names: str) -> AugmentPipe:
        """A pipe with just the named transforms on (tests, ablations)."""
        switches = {*_GEOMETRIC, *_COLOUR}
        unknown = set(names) - switches
        if unknown:
            raise ValueError(f"unknown augmentations {sorted(unknown)}; choose from {switches}")
        return cls(**{f.name: float(f.name in names) for f in fields(cls) if f.name in switches})

    def __call__(
        self, images: torch.Tensor, p: torch.Tensor | float, *, seeds: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Augment ``images`` (B, 3, H, W) in [-1, 1] with probability ``p`` (a 0-d tensor or a
        float); ``seeds``: one key per image (else the device's global random stream)."""
        b, _, h, w = images.shape
        dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
        z = draws(b, device=images.device, dtype=dtype, seeds=seeds)  # (B, 28)
        p = torch.as_tensor(p, device=images.device, dtype=dtype).clamp(0, 1)
        geom, moved = self.geometric(z[:, :_N_GEOMETRIC], p, h, w)
        x = images
        if moved is not None:
            warped = warp_affine(
                x.to(dtype), geom, (h, w), mode="bilinear", padding_mode="reflection"
            )
            x = torch.where(moved[:, None, None, None], warped.to(x.dtype), x)
        colour, tinted = self.colour(z[:, _N_GEOMETRIC:], p)
        if tinted is not None:
            mixed = torch.einsum("bij,bjhw->bihw", colour[:, :, :3], x.to(dtype))
            mixed = mixed + colour[:, :, 3, None, None]
            x = torch.where(tinted[:, None, None, None], mixed.to(x.dtype), x)
        return x

    # -- the two matrices ----------------------------------------------------------------------
    def geometric(
        self, z: torch.Tensor, p: torch.Tensor, h: int, w: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The source->destination pixel matrices (B, 2, 3) of the geometric transforms from 18
        normals per image, and which images move at all (None: every transform is off)."""
        b, u = len(z), _uniform(z)
        eye = torch.eye(3, dtype=z.dtype, device=z.device).expand(b, 3, 3)
        m, any_on = eye, torch.zeros(b, dtype=torch.bool, device=z.device)
        p_rot = 1 - torch.sqrt((1 - p * self.rotate).clamp(0, 1))
        one = torch.ones_like(u[:, 0])
        # (B, 2) sizes made on the device: no host-to-device copy, which would wait for the GPU
        size = torch.stack([one * w, one * h], dim=1)

        def apply(mult, coin: torch.Tensor, mat: torch.Tensor, prob=None) -> None:
            nonlocal m, any_on
            if mult <= 0:
                return
            on = coin < (p * mult if prob is None else prob)
            m = torch.where(on[:, None, None], mat, eye) @ m
            any_on = any_on | on

        # coins u[:, :8] in the order applied; then each transform's parameters
        flip = torch.where(u[:, 8] < 0.5, -one, one)
        apply(self.xflip, u[:, 0], _scale(flip, one))
        apply(self.rotate90, u[:, 1], _rotation(torch.floor(u[:, 9] * 4) * (math.pi / 2)))
        shift = torch.round((u[:, 10:12] * 2 - 1) * self.xint_max * size)
        apply(self.xint, u[:, 2], _translation(shift))
        s = torch.exp2(z[:, 12] * self.scale_std)
        apply(self.scale, u[:, 3], _scale(s, s))
        angle = (u[:, 13] * 2 - 1) * math.pi * self.rotate_max
        apply(self.rotate, u[:, 4], _rotation(angle), p_rot)
        s = torch.exp2(z[:, 14] * self.aniso_std)
        apply(self.aniso, u[:, 5], _scale(s, 1 / s))
        angle = (u[:, 15] * 2 - 1) * math.pi * self.rotate_max
        apply(self.rotate, u[:, 6], _rotation(angle), p_rot)
        apply(self.xfrac, u[:, 7], _translation(z[:, 16:18] * self.xfrac_std * size))
        if m is eye:
            return m[:, :2], None
        centre = (size - 1) / 2  # pixel centres 0 .. S-1: a quarter turn maps them onto pixels
        m = _translation(centre) @ m @ _translation(-centre)
        return m[:, :2], any_on

    def colour(self, z: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The colour matrices (B, 3, 4) from 10 normals per image (in [-1, 1] images: ``out =
        M[:, :3] @ rgb + M[:, 3]``) and which images change (None: every transform is off)."""
        b, u = len(z), _uniform(z)
        dev, dt = z.device, z.dtype
        eye = torch.eye(4, dtype=dt, device=dev).expand(b, 4, 4)
        m, any_on = eye, torch.zeros(b, dtype=torch.bool, device=dev)
        v = torch.full((3,), 1 / math.sqrt(3), dtype=dt, device=dev)  # the luma axis
        vv = torch.outer(v, v)

        def apply(mult, coin: torch.Tensor, mat3: torch.Tensor, offset=None) -> None:
            nonlocal m, any_on
            if mult <= 0:
                return
            mat = torch.zeros(b, 4, 4, dtype=dt, device=dev)
            mat[:, :3, :3], mat[:, 3, 3] = mat3, 1
            if offset is not None:
                mat[:, :3, 3] = offset[:, None]
            on = coin < p * mult
            m = torch.where(on[:, None, None], mat, eye) @ m
            any_on = any_on | on

        i3 = torch.eye(3, dtype=dt, device=dev).expand(b, 3, 3)
        apply(self.brightness, u[:, 0], i3, z[:, 5] * self.brightness_std)
        c = torch.exp2(z[:, 6] * self.contrast_std)
        apply(self.contrast, u[:, 1], i3 * c[:, None, None])
        flip = torch.floor(u[:, 7] * 2)
        apply(self.lumaflip, u[:, 2], i3 - 2 * vv * flip[:, None, None])
        apply(self.hue, u[:, 3], _axis_rotation(v, (u[:, 8] * 2 - 1) * math.pi * self.hue_max))
        s = torch.exp2(z[:, 9] * self.saturation_std)
        apply(self.saturation, u[:, 4], vv + (i3 - vv) * s[:, None, None])
        return m[:, :3], None if m is eye else any_on


def draws(
    n: int,
    *,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    seeds: Sequence[int] | None = None,
) -> torch.Tensor:
    """(n, 28) standard normals: keyed per image by ``seeds`` (``keyed_normal``), else fresh."""
    if seeds is None:
        return torch.randn(n, _N_DRAWS, device=device, dtype=dtype)
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} augmentation seeds for {n} images")
    (z,) = keyed_normal(list(seeds), [(_N_DRAWS,)], device=device, dtype=dtype)
    return z


def sign_counts(logits: torch.Tensor) -> torch.Tensor:
    """``[sum of sign(logits), count]`` as a (2,) long tensor (NaN logits count 0)."""
    signs = (logits.detach() > 0).long() - (logits.detach() < 0).long()
    return torch.stack([signs.sum(), signs.new_full((), signs.numel())])


def ada_adjust(
    p: torch.Tensor, counts: torch.Tensor, *, target: float, images: int, ada_kimg: float
) -> torch.Tensor:
    """The new ``p`` (same shape and dtype) from ``counts = [sum of sign(D(real)), n]`` gathered
    over the last ``images`` images (all processes): ``p + sign(r_t - target) * images /
    (ada_kimg * 1000)`` clamped to [0, 1]; unchanged when ``n`` is 0."""
    r_t = counts[0].to(p.dtype) / counts[1].clamp(min=1).to(p.dtype)
    step = torch.sign(r_t - target) * (images / (ada_kimg * 1000))
    return torch.where(counts[1] > 0, (p + step).clamp(0, 1), p)


# -- small matrices --------------------------------------------------------------------------
def _uniform(z: torch.Tensor) -> torch.Tensor:
    """Normals -> uniforms in (0, 1) (the normal CDF)."""
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def _scale(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = torch.zeros(len(sx), 3, 3, dtype=sx.dtype, device=sx.device)
    m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = sx, sy, 1
    return m


def _rotation(angle: torch.Tensor) -> torch.Tensor:
    m = _scale(torch.cos(angle), torch.cos(angle))
    m[:, 0, 1], m[:, 1, 0] = -torch.sin(angle), torch.sin(angle)
    return m


def _translation(t: torch.Tensor) -> torch.Tensor:
    m = _scale(torch.ones_like(t[:, 0]), torch.ones_like(t[:, 0]))
    m[:, 0, 2], m[:, 1, 2] = t[:, 0], t[:, 1]
    return m


def _axis_rotation(v: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotations (B, 3, 3) by ``angle`` around the unit axis ``v`` (Rodrigues)."""
    cross = torch.zeros(3, 3, dtype=v.dtype, device=v.device)
    cross[0, 1], cross[0, 2], cross[1, 2] = -v[2], v[1], -v[0]
    cross = cross - cross.T
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    return cos * eye + sin * cross + (1 - cos) * torch.outer(v, v)
