"""NIQE, the Natural Image Quality Evaluator (Mittal, Soundararajan and Bovik, "Making a
'Completely Blind' Image Quality Analyzer", IEEE SPL 2013): a no-reference score, lower is more
natural. Written from the paper and the authors' MATLAB release (``computequality.m``):

- the gray image (MATLAB's ``rgb2gray``, rounded to uint8), cropped to whole 96 px blocks;
- at two scales (the image, then MATLAB's ``imresize(im, 0.5)``: bicubic, antialiased, symmetric
  borders): MSCN coefficients ``(I - mu) / (sigma + 1)`` with a 7x7 Gaussian window
  (sigma 7/6, replicated borders); per block (96 px, then 48 px) 18 features: the asymmetric
  generalised Gaussian fit (shape, mean scale) of the coefficients and (shape, mean, left and
  right scales) of their products with the neighbours at offsets (0, 1), (1, 0), (1, 1), (1, -1);
- the distance of the blocks' Gaussian ``(mu, cov)`` to the pristine model's
  ``sqrt((mu_p - mu)^T pinv((cov_p + cov) / 2) (mu_p - mu))``.

The pristine model (``mu_prisparam`` (36,), ``cov_prisparam`` (36, 36)) is read from a local
file: the MATLAB release's ``modelparameters.mat`` or an ``.npz`` with those two arrays (basicsr
ships one, ``niqe_pris_params.npz``). Nothing is downloaded.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from scipy.ndimage import correlate
from scipy.special import gamma

__all__ = ["Niqe", "block_features", "load_pristine", "matlab_resize_half", "niqe"]

_SHAPES = np.arange(0.2, 10.0005, 0.001)  # the MATLAB grid of shape parameters, 0.2:0.001:10
_G1, _G2, _G3 = gamma(1 / _SHAPES), gamma(2 / _SHAPES), gamma(3 / _SHAPES)


def _gaussian_window(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    r = np.arange(size) - (size - 1) / 2
    w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return w / w.sum()


def _cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return (1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1) + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * (
        (a > 1) & (a <= 2)
    )


def _resize_matrix(n: int) -> np.ndarray:
    """MATLAB ``imresize`` by 0.5 along one axis of length ``n`` as a (ceil(n/2), n) matrix:
    the cubic kernel widened 2x (antialiasing), symmetric borders."""
    scale, width = 0.5, 4 / 0.5
    out = math.ceil(n * scale)
    u = np.arange(1, out + 1) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    w = scale * _cubic(scale * (u[:, None] - idx))
    w /= w.sum(1, keepdims=True)
    mirror = np.concatenate([np.arange(n), np.arange(n)[::-1]])
    cols = mirror[(idx.astype(int) - 1) % (2 * n)]
    m = np.zeros((out, n))
    np.add.at(m, (np.repeat(np.arange(out), taps), cols.ravel()), w.ravel())
    return m


def matlab_resize_half(image: np.ndarray) -> np.ndarray:
    """MATLAB's ``imresize(image, 0.5)`` (bicubic, antialiased) of a 2-D float array."""
    rows, cols = _resize_matrix(image.shape[0]), _resize_matrix(image.shape[1])
    return rows @ image @ cols.T


def _aggd(x: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric generalised Gaussian fit by moment matching on the MATLAB shape grid:
    (shape alpha, left scale beta_l, right scale beta_r)."""
    left, right = np.sqrt(np.mean(x[x < 0] ** 2)), np.sqrt(np.mean(x[x > 0] ** 2))
    g = left / right
    r = np.mean(np.abs(x)) ** 2 / np.mean(x**2)
    r_norm = r * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    i = np.argmin((_G2**2 / (_G1 * _G3) - r_norm) ** 2)
    to_scale = math.sqrt(_G1[i] / _G3[i])
    return float(_SHAPES[i]), float(left * to_scale), float(right * to_scale)


def block_features(block: np.ndarray) -> np.ndarray:
    """The 18 features of one block of MSCN coefficients (2-D float array): the AGGD fit of the
    coefficients (alpha, mean scale), then of their products with the neighbours at 4 offsets
    (alpha, mean, beta_l, beta_r)."""
    alpha, beta_l, beta_r = _aggd(block.ravel())
    feats = [alpha, (beta_l + beta_r) / 2]
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):  # MATLAB circshift by [dy dx]
        pair = block * np.roll(block, (dy, dx), axis=(0, 1))
        alpha, beta_l, beta_r = _aggd(pair.ravel())
        i = round((alpha - 0.2) / 0.001)
        feats += [alpha, (beta_r - beta_l) * _G2[i] / _G1[i], beta_l, beta_r]
    return np.asarray(feats)


def _mscn(image: np.ndarray) -> np.ndarray:
    window = _gaussian_window()
    mu = correlate(image, window, mode="nearest")
    sigma = np.sqrt(np.abs(correlate(image * image, window, mode="nearest") - mu * mu))
    return (image - mu) / (sigma + 1)


def niqe(
    gray: np.ndarray, mu_pristine: np.ndarray, cov_pristine: np.ndarray, *, block: int = 96
) -> float:
    """NIQE of a gray image (2-D, values in [0, 255]) against the pristine model."""
    h, w = (s // block * block for s in gray.shape)
    if h == 0 or w == 0:
        raise ValueError(f"NIQE needs an image of at least {block}x{block} px, got {gray.shape}")
    image = gray[:h, :w].astype(np.float64)
    per_scale = []
    for scale in (1, 2):
        coeffs, b = _mscn(image), block // scale
        per_scale.append(
            np.stack(
                [
                    block_features(coeffs[y : y + b, x : x + b])
                    for y in range(0, coeffs.shape[0] - b + 1, b)
                    for x in range(0, coeffs.shape[1] - b + 1, b)
                ]
            )
        )
        image = matlab_resize_half(image)
    feats = np.concatenate(per_scale, 1)  # (blocks, 36)
    mu = np.nanmean(feats, 0)
    clean = feats[~np.isnan(feats).any(1)]  # MATLAB nancov: rows without NaN
    cov = np.cov(clean, rowvar=False) if len(clean) > 1 else np.zeros((36, 36))
    d = mu_pristine - mu
    return float(np.sqrt(d @ np.linalg.pinv((cov_pristine + cov) / 2) @ d))


def load_pristine(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(mu_prisparam (36,), cov_prisparam (36, 36))`` from a ``.mat`` or ``.npz`` file."""
    path = Path(path)
    if path.suffix == ".mat":
        from scipy.io import loadmat

        data = loadmat(path)
    else:
        data = dict(np.load(path))
    if "mu_prisparam" not in data or "cov_prisparam" not in data:
        raise ValueError(f"{path} has no mu_prisparam / cov_prisparam (the NIQE pristine model)")
    return np.asarray(data["mu_prisparam"]).ravel(), np.asarray(data["cov_prisparam"])


class Niqe:
    """NIQE of uint8 RGB images (B, 3, H, W) against the pristine model in ``params`` (a local
    ``.mat``/``.npz``, see ``load_pristine``): ``__call__`` -> (B,) float64."""

    def __init__(self, params: str | os.PathLike[str]) -> None:
        self.mu, self.cov = load_pristine(params)
        self.source = f"NIQE (ours, from the MATLAB definition), parameters {Path(params).name}"

    def __call__(self, images) -> np.ndarray:
        """(B, 3, H, W) uint8 -> (B,) NIQE; NaN for images under 96 px (a block)."""
        if min(images.shape[-2:]) < 96:
            return np.full(len(images), np.nan)
        rgb = images.detach().cpu().double().numpy()
        # MATLAB rgb2gray, rounded to uint8 as it returns for uint8 input
        weights = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
        gray = np.round(np.einsum("bchw,c->bhw", rgb, weights))
        return np.array([niqe(g, self.mu, self.cov) for g in gray])
