"""Named model configurations: the official GPEN releases and tiny presets for tests / CPU demos."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from torch import nn

from gpen_lightning.zoo.discriminator import Discriminator
from gpen_lightning.zoo.generator import Generator
from gpen_lightning.zoo.gpen import GPEN
from gpen_lightning.zoo.layers import NoiseMode

__all__ = ["Preset", "PRESETS", "build", "get_preset", "match_preset"]

Part = Literal["gpen", "prior", "discriminator"]


@dataclass(frozen=True)
class Preset:
    """Hyper-parameters that fix a GPEN / discriminator architecture (the ``GPEN`` and
    ``Generator`` arguments of the same names)."""

    size: int
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    narrow: float = 1.0
    noise_mode: NoiseMode = "concat"


PRESETS: dict[str, Preset] = {
    # Official releases.
    "gpen-bfr-256": Preset(256, channel_multiplier=1, narrow=0.5),
    "gpen-bfr-512": Preset(512),
    "gpen-bfr-1024": Preset(1024),
    "gpen-bfr-2048": Preset(2048),
    "gpen-colorization-1024": Preset(1024),
    "gpen-inpainting-1024": Preset(1024),
    "gpen-seg2face-512": Preset(512),
    # Tiny presets for tests and CPU demos; tiny-64 is the parity-fixture architecture.
    # slim-64 is tiny-32's width at 64 px (32 channels, 16 at 64 px): real faces on a CPU.
    "gpen-tiny-32": Preset(32, style_dim=64, n_mlp=2, channel_multiplier=1, narrow=0.0625),
    "gpen-tiny-64": Preset(64, style_dim=128, n_mlp=4, channel_multiplier=2, narrow=0.25),
    "gpen-slim-64": Preset(64, style_dim=64, n_mlp=2, channel_multiplier=1, narrow=0.0625),
    "gpen-tiny-128": Preset(128, style_dim=128, n_mlp=4, channel_multiplier=1, narrow=0.125),
    # base-128 is the GPEN-BFR-256 release's width at 128 px (256 channels, 64 at 128 px) with
    # StyleGAN2-ADA's 2-layer mapping: real faces on one GPU (experiment=faces128).
    "gpen-base-128": Preset(128, n_mlp=2, channel_multiplier=1, narrow=0.5),
}


def get_preset(name: str, **overrides: Any) -> Preset:
    """Look up a preset by name, optionally overriding fields (e.g. ``noise_mode="add"``)."""
    try:
        preset = PRESETS[name]
    except KeyError:
        raise KeyError(
            f"unknown model preset {name!r}; available: {', '.join(sorted(PRESETS))}"
        ) from None
    return replace(preset, **overrides) if overrides else preset


def build(
    name: str, part: Part = "gpen", *, stddev_group: int | None = None, **overrides: Any
) -> nn.Module:
    """Build ``GPEN`` (part="gpen", the U-shaped restoration network), its GAN prior alone
    (part="prior": the StyleGAN2 ``Generator`` that the first training stage learns and GPEN
    embeds as its decoder) or the ``Discriminator`` (part="discriminator").

    Extra keyword arguments override preset fields (``noise_mode``, ``narrow``, ...). Wrap the
    call in ``with torch.device("meta"):`` to build a large preset without allocating weights.
    """
    p = get_preset(name, **overrides)
    if part in ("gpen", "prior"):
        return (GPEN if part == "gpen" else Generator)(**asdict(p))
    if part == "discriminator":
        return Discriminator(
            p.size,
            channel_multiplier=p.channel_multiplier,
            narrow=p.narrow,
            stddev_group=stddev_group,
        )
    raise ValueError(f"part must be 'gpen', 'prior' or 'discriminator', got {part!r}")


def match_preset(net: nn.Module) -> str | None:
    """The name of the preset whose ``GPEN`` has exactly ``net``'s parameter layout (several
    releases share one architecture: the first in ``PRESETS`` order), or None."""
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    for name, preset in PRESETS.items():
        if preset.size != getattr(net, "size", None):
            continue
        mode = getattr(getattr(net, "generator", None), "noise_mode", preset.noise_mode)
        with torch.device("meta"):
            candidate = build(name, "gpen", noise_mode=mode)
        if {k: tuple(v.shape) for k, v in candidate.state_dict().items()} == shapes:
            return name
    return None
