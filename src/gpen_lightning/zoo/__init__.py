"""Model zoo: pure ``torch.nn`` GPEN networks (no Lightning), presets and official-checkpoint I/O.

Layering (imports flow one way): ``ops`` -> ``layers`` -> ``blocks`` / ``generator`` -> ``gpen`` /
``discriminator`` -> ``presets`` / ``official``.
"""

from gpen_lightning.zoo.blocks import ConvLayer, ResBlock
from gpen_lightning.zoo.discriminator import Discriminator, minibatch_stddev
from gpen_lightning.zoo.generator import Generator, channel_table
from gpen_lightning.zoo.gpen import GPEN
from gpen_lightning.zoo.layers import (
    Blur,
    ConstantInput,
    EqualConv2d,
    EqualLinear,
    FusedLeakyReLU,
    ModulatedConv2d,
    NoiseInjection,
    PixelNorm,
    StyledConv,
    ToRGB,
    Upsample,
)
from gpen_lightning.zoo.official import (
    CheckpointMismatchError,
    UnsafeCheckpointError,
    export_official,
    infer_config,
    load_network,
    load_official,
    official_state_dict,
)
from gpen_lightning.zoo.presets import PRESETS, Preset, build, get_preset
from gpen_lightning.zoo.weights import load_restoration_model

__all__ = [
    "GPEN",
    "PRESETS",
    "Blur",
    "CheckpointMismatchError",
    "ConstantInput",
    "ConvLayer",
    "Discriminator",
    "EqualConv2d",
    "EqualLinear",
    "FusedLeakyReLU",
    "Generator",
    "ModulatedConv2d",
    "NoiseInjection",
    "PixelNorm",
    "Preset",
    "ResBlock",
    "StyledConv",
    "ToRGB",
    "UnsafeCheckpointError",
    "Upsample",
    "build",
    "channel_table",
    "export_official",
    "get_preset",
    "infer_config",
    "load_network",
    "load_official",
    "load_restoration_model",
    "minibatch_stddev",
    "official_state_dict",
]
