"""Batched, per-sample synthetic degradation of HQ faces into LQ inputs (the GFPGAN degradation
model, Wang et al. 2021).

Runs on whatever device the batch lives on (the GPU when training on GPU), draws every parameter
per sample, and is reproducible given a seed or ``torch.Generator``. Order (GFPGAN model):
colour jitter (optional) -> blur -> downsample -> noise -> JPEG -> 8-bit rounding -> resize back
-> grayscale (LQ and HQ alike); then the task variant (colorization / inpainting).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from gpen_lightning.data.kernels import brush_masks, gaussian_kernels, motion_kernels
from gpen_lightning.ranges import to_uint8

__all__ = ["Degradation", "Range"]

Range = Sequence[float] | None
Task = Literal["restoration", "colorization", "inpainting"]


def _uniform(lo: float, hi: float, n: int, g: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64).float()


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize without antialiasing (as OpenCV's INTER_LINEAR); a no-op at equal size."""
    if tuple(x.shape[-2:]) == size:
        return x
    return kornia.geometry.transform.resize(
        x, size, interpolation="bilinear", align_corners=False, antialias=False
    )


def params_to(p: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The per-sample parameters (host tensors with B rows) on ``device`` in one copy: packed into
    one float64 (B, K) block (exact for every long, bool and float32 value), pinned when it goes
    to a GPU, sent without blocking the host, and split back into their dtypes there."""
    if device.type == "cpu":
        return p
    cols = [v.reshape(len(v), -1).double() for v in p.values()]
    block = torch.cat(cols, 1)
    if device.type == "cuda" and block.device.type == "cpu":
        block = block.pin_memory()
    block = block.to(device, non_blocking=True)
    out, start = {}, 0
    for (key, v), col in zip(p.items(), cols):
        out[key] = block[:, start : start + col.shape[1]].reshape(v.shape).to(v.dtype)
        start += col.shape[1]
    return out


def _check_range(name: str, value: Range, lo: float = -math.inf) -> tuple[float, float] | None:
    if value is None:
        return None
    if len(value) != 2 or not (lo <= value[0] <= value[1]):
        raise ValueError(
            f"degradation {name} must be a [min, max] pair with {lo} <= min <= max, "
            f"got {list(value)}; use null to switch the op off"
        )
    return float(value[0]), float(value[1])


class Degradation(nn.Module):
    """Synthesize LQ faces from HQ ones, per sample.

    Args:
        kernel_size: blur kernel size (odd).
        blur_probs: probabilities of (isotropic Gaussian, anisotropic Gaussian, motion) blur;
            the remainder is no blur. ``None`` switches blur off.
        sigma: Gaussian sigma range in pixels (each axis for anisotropic kernels).
        rotation: anisotropic kernel rotation range, radians.
        motion_length: motion-blur length range in pixels (<= kernel_size).
        downsample: downsampling factor range (>0); ``None`` keeps the size.
        noise: Gaussian noise sigma range on the 0-255 scale; ``None`` for none.
        poisson_prob: probability of Poisson (shot) noise, with scale in ``poisson_scale``.
        jpeg: JPEG quality range (1-100); ``None`` for none.
        gray_prob: probability of turning LQ and HQ gray.
        color_jitter_prob: probability of a per-channel colour shift of the LQ ...
        color_jitter_shift: ... drawn in [-shift, shift] (0-1 scale; 20/255 in GFPGAN).
        task: ``restoration``; ``colorization`` (LQ always gray, HQ keeps its colour);
            ``inpainting`` (random white brush strokes painted on the LQ).
        inpaint_strokes, inpaint_vertices, inpaint_width: brush-stroke ranges (width at 512 px).
        reference_size: the face size (px) the spatial ranges are defined at (512 for the
            GFPGAN / paper / CodeFormer presets). At another size S they follow the face: blur
            sigma, kernel size and motion length are scaled by S / reference_size (the kernel to
            the nearest odd size >= 3); downsampling factors, noise and JPEG quality stay.
            ``None``: the ranges are pixels at every size (the behaviour before this option).

    ``forward(hq)`` takes (B, 3, H, W) in [0, 1] (float) or uint8 and returns a dict with ``lq``,
    ``hq`` (gray where the sample was grayed) of the input's dtype and size, and ``params``, the
    drawn per-sample parameters (B,) for logging and analysis.
    """

    def __init__(
        self,
        *,
        kernel_size: int = 41,
        blur_probs: Sequence[float] | None = (0.5, 0.5, 0.0),
        sigma: Range = (0.1, 10.0),
        rotation: Range = (-math.pi, math.pi),
        motion_length: Range = (5.0, 25.0),
        downsample: Range = (0.8, 8.0),
        noise: Range = (0.0, 20.0),
        poisson_prob: float = 0.0,
        poisson_scale: Range = (0.05, 3.0),
        jpeg: Range = (60.0, 100.0),
        gray_prob: float = 0.2,
        color_jitter_prob: float = 0.0,
        color_jitter_shift: float = 20 / 255,
        task: Task = "restoration",
        inpaint_strokes: Sequence[int] = (1, 3),
        inpaint_vertices: Sequence[int] = (8, 28),
        inpaint_width: Sequence[float] = (12, 80),
        reference_size: int | None = 512,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}")
        if blur_probs is not None and (
            len(blur_probs) != 3 or not 0 <= sum(blur_probs) <= 1 + 1e-6 or min(blur_probs) < 0
        ):
            raise ValueError(
                "blur_probs must be 3 probabilities (iso, aniso, motion) summing to "
                f"at most 1, got {blur_probs}"
            )
        if task not in ("restoration", "colorization", "inpainting"):
            raise ValueError(f"task must be restoration, colorization or inpainting, got {task!r}")
        self.kernel_size = kernel_size
        self.blur_probs = None if blur_probs is None else tuple(float(p) for p in blur_probs)
        self.sigma = _check_range("sigma", sigma, 1e-3)
        self.rotation = _check_range("rotation", rotation)
        self.motion_length = _check_range("motion_length", motion_length, 1.0)
        self.downsample = _check_range("downsample", downsample, 1e-3)
        self.noise = _check_range("noise", noise, 0.0)
        self.poisson_prob = poisson_prob
        self.poisson_scale = _check_range("poisson_scale", poisson_scale, 1e-6)
        self.jpeg = _check_range("jpeg", jpeg, 1.0)
        if self.jpeg and self.jpeg[1] > 100:
            raise ValueError(f"jpeg quality must be within [1, 100], got {list(jpeg)}")
        self.gray_prob = gray_prob
        self.color_jitter_prob = color_jitter_prob
        self.color_jitter_shift = color_jitter_shift
        self.task = task
        if reference_size is not None and reference_size < 1:
            raise ValueError(f"reference_size must be a size in px or null, got {reference_size}")
        self.reference_size = reference_size
        self.inpaint = dict(
            strokes=tuple(inpaint_strokes),
            vertices=tuple(inpaint_vertices),
            width=tuple(inpaint_width),
        )

    # ------------------------------------------------------------------ parameters
    def spatial_scale(self, size: int) -> float:
        """How much the spatial ranges shrink or grow for faces of ``size`` px."""
        return 1.0 if self.reference_size is None else size / self.reference_size

    def kernel_size_at(self, size: int) -> int:
        """The blur kernel size for faces of ``size`` px: odd, >= 3."""
        k = self.kernel_size * self.spatial_scale(size)
        return max(3, 2 * math.floor(k / 2) + 1)

    def sample_params(
        self, batch: int, generator: torch.Generator | None = None, *, size: int | None = None
    ) -> dict:
        """Draw every per-sample parameter on the CPU: a dict of (B,) tensors. ``size``: the
        faces' size, which scales the spatial ranges (``reference_size``; default: unscaled)."""
        g, n = generator, batch
        s = 1.0 if size is None else self.spatial_scale(size)
        kernel = self.kernel_size if size is None else self.kernel_size_at(size)
        p: dict[str, torch.Tensor] = {}
        # blur kind: 0 none, 1 iso, 2 aniso, 3 motion
        kind = torch.zeros(n, dtype=torch.long)
        if self.blur_probs is not None:
            # how many cumulative probabilities u passes: 0 -> iso, 1 -> aniso, 2 -> motion, 3 none
            edges = torch.tensor(self.blur_probs).cumsum(0)
            kind = (torch.searchsorted(edges, torch.rand(n, generator=g), right=True) + 1) % 4
        p["blur_kind"] = kind
        lo, hi = self.sigma or (1.0, 1.0)
        lo, hi = lo * s, hi * s
        p["sigma_x"], p["sigma_y"] = _uniform(lo, hi, n, g), _uniform(lo, hi, n, g)
        p["sigma_y"] = torch.where(kind == 1, p["sigma_x"], p["sigma_y"])
        p["theta"] = _uniform(*(self.rotation or (0.0, 0.0)), n, g) * (kind == 2)
        ml = self.motion_length or (1.0, 1.0)
        p["motion_length"] = _uniform(ml[0] * s, min(ml[1] * s, kernel), n, g)
        p["motion_angle"] = _uniform(0, math.pi, n, g)
        p["scale"] = _uniform(*(self.downsample or (1.0, 1.0)), n, g)
        p["noise_sigma"] = _uniform(*(self.noise or (0.0, 0.0)), n, g)
        p["poisson"] = torch.rand(n, generator=g) < self.poisson_prob
        p["poisson_scale"] = _uniform(*(self.poisson_scale or (1.0, 1.0)), n, g)
        p["jpeg_quality"] = _uniform(*(self.jpeg or (100.0, 100.0)), n, g).round()
        p["color_shift"] = (torch.rand(n, 3, generator=g) * 2 - 1) * self.color_jitter_shift
        p["color_shift"] *= (torch.rand(n, generator=g) < self.color_jitter_prob)[:, None]
        p["gray"] = (torch.rand(n, generator=g) < self.gray_prob) | (self.task == "colorization")
        return p

    # ------------------------------------------------------------------ ops
    def blur(self, x: torch.Tensor, p: dict, dp: dict) -> torch.Tensor:
        """Per-sample Gaussian / motion blur (reflect borders): (B, C, H, W) -> same. ``p``: the
        host parameters (which kinds were drawn is decided on them), ``dp``: the same on the
        device of ``x`` (``params_to``)."""
        if not bool((p["blur_kind"] > 0).any()):  # host values: no device read-back
            return x
        f = lambda key: dp[key].to(x.dtype)  # noqa: E731
        kernel = self.kernel_size_at(x.shape[-1])
        k = gaussian_kernels(f("sigma_x"), f("sigma_y"), f("theta"), kernel)
        kind = dp["blur_kind"]
        if bool((p["blur_kind"] == 3).any()):  # motion kernels only when a sample drew one
            km = motion_kernels(f("motion_length"), f("motion_angle"), kernel)
            k = torch.where((kind == 3)[:, None, None], km, k)
        out = kornia.filters.filter2d(x, k, border_type="reflect")
        return torch.where((kind > 0)[:, None, None, None], out, x)

    def noise_(self, x: torch.Tensor, p: dict, g: torch.Generator | None, dp: dict) -> torch.Tensor:
        """Gaussian noise (sigma on the 0-255 scale), then optional Poisson noise. ``p``, ``dp``:
        host and device parameters (see ``blur``)."""
        if self.noise:
            sigma = (dp["noise_sigma"] / 255).to(x.dtype)[:, None, None, None]
            x = x + torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype) * sigma
        if bool(p["poisson"].any()):
            vals = (10 ** dp["poisson_scale"]).to(x.dtype)[:, None, None, None] * 255
            shot = torch.poisson(x.clamp(0, 1) * vals, generator=g) / vals - x.clamp(0, 1)
            x = x + shot * dp["poisson"][:, None, None, None]
        return x

    def forward(
        self,
        hq: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        params: dict | None = None,
    ) -> dict:
        if hq.ndim != 4 or hq.shape[1] != 3:
            raise ValueError(f"expected an RGB batch (B, 3, H, W), got {tuple(hq.shape)}")
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
        dtype, device = hq.dtype, hq.device
        b, _, h, w = hq.shape
        p = params if params is not None else self.sample_params(b, generator, size=w)
        # large random tensors are drawn on the data's device, seeded from the CPU generator
        dseed = int(torch.randint(0, 2**62, (), generator=generator))
        # (the meta device of the shape checks has no generator and draws nothing)
        dgen = None if device.type == "meta" else torch.Generator(device=device).manual_seed(dseed)
        dp = params_to(p, device)
        with torch.no_grad():
            x = hq.float() / 255 if dtype == torch.uint8 else hq.float()
            target = x
            x = (x + dp["color_shift"][:, :, None, None]).clamp(0, 1)
            x = self.blur(x, p, dp)
            x = self.degrade_lowres(x, p, dgen, dp)
            gray = dp["gray"][:, None, None, None]
            if bool(p["gray"].any()):
                x = torch.where(gray, kornia.color.rgb_to_grayscale(x).expand_as(x), x)
                if self.task != "colorization":
                    target = torch.where(
                        gray, kornia.color.rgb_to_grayscale(target).expand_as(x), target
                    )
            if self.task == "inpainting":
                m = brush_masks(b, h, generator=generator, device=device, **self.inpaint)
                if h != w:
                    m = F.interpolate(m, size=(h, w), mode="nearest")
                x = x * (1 - m) + m
                p["mask_fraction"] = m.mean((1, 2, 3))  # on the device: no read-back
        return {
            "lq": to_uint8(x) if dtype == torch.uint8 else x.to(dtype),
            "hq": to_uint8(target) if dtype == torch.uint8 else target.to(dtype),
            "params": p,
        }

    def degrade_lowres(
        self, x: torch.Tensor, p: dict, g: torch.Generator, dp: dict
    ) -> torch.Tensor:
        """Downsample each sample, add noise, JPEG, round to 8 bit, resize back to (H, W).

        Samples of different low-res sizes share one canvas (edge-replicated, as a JPEG encoder
        pads a partial block) so noise and JPEG run batched; each sample is cropped back after.
        """
        b, c, h, w = x.shape
        scales = p["scale"].tolist() if self.downsample else [1.0] * b
        sizes = [(max(1, int(h / s)), max(1, int(w / s))) for s in scales]
        ch, cw = max(s[0] for s in sizes), max(s[1] for s in sizes)
        canvas = x.new_empty(b, c, ch, cw)
        for i, (sh, sw) in enumerate(sizes):
            small = _resize(x[i : i + 1], (sh, sw))
            canvas[i : i + 1] = F.pad(small, (0, cw - sw, 0, ch - sh), mode="replicate")
        canvas = self.noise_(canvas, p, g, dp).clamp(0, 1)
        if self.jpeg:
            # the qualities stay host values: kornia checks their range on them (no device
            # read-back) and sends them over without blocking
            canvas = kornia.enhance.jpeg_codec_differentiable(
                canvas, p["jpeg_quality"].to(canvas.dtype)
            )
        canvas = (canvas.clamp(0, 1) * 255).round() / 255
        out = torch.empty_like(x)
        for i, (sh, sw) in enumerate(sizes):
            out[i : i + 1] = _resize(canvas[i : i + 1, :, :sh, :sw], (h, w))
        return out.clamp(0, 1)
