"""The two value ranges of images: the networks see [-1, 1] ("signed"); files, metrics and the
paste-back work in [0, 1] (or uint8). ``to_signed`` and ``to_unit`` are exact scalings by powers
of two, so they give the same bits as the hand-written formulas they replace."""

from __future__ import annotations

import torch

__all__ = ["to_signed", "to_uint8", "to_unit"]


def to_signed(x: torch.Tensor, peak: float | None = None) -> torch.Tensor:
    """[0, peak] -> [-1, 1] as float: ``x / (peak / 2) - 1``. ``peak`` defaults to 255 for uint8
    and 1 for floating-point input (give 255 for float pixels)."""
    if peak is None:
        peak = 255.0 if x.dtype == torch.uint8 else 1.0
    x = x.float() if x.dtype == torch.uint8 else x
    return x / (peak / 2) - 1


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8 (rounded, as a saved PNG holds them); uint8 unchanged."""
    if images.dtype == torch.uint8:
        return images
    return images.float().mul(255).round().clamp(0, 255).byte()


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]: ``(x + 1) / 2`` (no clamping)."""
    return (x + 1) / 2
