"""Official GPEN checkpoint I/O: load released ``.pth`` files safely, write the official layout.

Our modules use the official parameter names, so the official layout is our state dict minus the
buffers the official code does not have (``w_avg``). Sizes and widths are inferred from tensor
shapes, never from file names.
"""

from __future__ import annotations

import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from gpen_lightning.io import atomic_save
from gpen_lightning.zoo.discriminator import Discriminator
from gpen_lightning.zoo.generator import Generator, channel_table
from gpen_lightning.zoo.gpen import GPEN

__all__ = [
    "CheckpointMismatchError",
    "UnsafeCheckpointError",
    "export_official",
    "infer_config",
    "load_network",
    "load_official",
    "official_state_dict",
]

_NON_OFFICIAL_SUFFIXES = ("w_avg",)


class UnsafeCheckpointError(ValueError):
    """The file needs arbitrary unpickling (it could execute code), so it was not loaded."""


class CheckpointMismatchError(ValueError):
    """A state dict does not match the architecture it was inferred or asked for."""


def official_state_dict(module: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """The state dict of a ``GPEN``, ``Generator`` or ``Discriminator`` in the official layout."""
    return OrderedDict(
        (k, v) for k, v in module.state_dict().items() if not k.endswith(_NON_OFFICIAL_SUFFIXES)
    )


def export_official(
    module: nn.Module, path: str | os.PathLike[str] | None = None
) -> OrderedDict[str, torch.Tensor]:
    """Detached copies of the official-layout tensors; also ``torch.save``d to ``path`` if given.

    The file is written atomically (temporary file + rename), so an interrupted export never leaves
    a truncated checkpoint behind.
    """
    state = OrderedDict((k, v.detach().clone()) for k, v in official_state_dict(module).items())
    if path is not None:
        atomic_save(state, path)
    return state


def _read(src: str | os.PathLike[str] | Mapping[str, Any], map_location: Any) -> Mapping[str, Any]:
    if isinstance(src, Mapping):
        return src
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device=str(map_location))
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it is not a plain tensor checkpoint and unpickling it would "
            "run arbitrary code (torch.load(weights_only=True) rejected it). Official GPEN files "
            "are plain state dicts; if you trust this file, re-save its state_dict() with "
            "torch.save in a trusted session and load that instead. "
            f"Loader said: {str(err).splitlines()[0]}"
        ) from None


def _select(obj: Mapping[str, Any], part: str | None, prefer_ema: bool) -> Mapping[str, Any]:
    """Pick the generator or discriminator state out of a bare or training dict."""
    training_keys = [k for k in ("g_ema", "g", "d") if isinstance(obj.get(k), Mapping)]
    if not training_keys:
        return obj
    gen_order = ("g_ema", "g") if prefer_ema else ("g", "g_ema")
    order = {"discriminator": ("d",), "generator": gen_order, None: (*gen_order, "d")}[part]
    for key in order:
        if key in training_keys:
            return obj[key]
    raise KeyError(f"training checkpoint has {training_keys} but no state for part={part!r}")


def _clean(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointMismatchError(f"entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k.removeprefix("module.")] = v
    return out


def _max_index(state: Mapping[str, Any], prefix: str) -> int:
    """Largest N among keys ``{prefix}N.*`` (robust to individual missing keys), -1 if none."""
    rx = re.compile(re.escape(prefix) + r"(\d+)\.")
    return max((int(m.group(1)) for k in state if (m := rx.match(k))), default=-1)


def _channel_multiplier(size: int, ch_size: int, narrow: float) -> int:
    """cm from the channel count at full resolution (cm has no effect below 64 px): the count
    over the width the channel table gives at cm = 1."""
    if size < 64:
        return 1
    return max(1, round(ch_size / (channel_table(1)[size] * narrow)))


def infer_config(state: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]]:
    """Infer ``("gpen" | "generator" | "discriminator", constructor kwargs)`` from tensor shapes."""
    if "convs.0.0.weight" in state and "final_conv.0.weight" in state:
        n_blocks = _max_index(state, "convs.")  # convs.0 is the 1x1 from-RGB layer
        size = 2 ** (n_blocks + 2)
        narrow = state["final_conv.0.weight"].shape[0] / 512
        cm = _channel_multiplier(size, state["convs.0.0.weight"].shape[0], narrow)
        return "discriminator", dict(size=size, channel_multiplier=cm, narrow=narrow)
    if "generator.input.input" in state:
        kind, p = "gpen", "generator."
    elif "input.input" in state and "style.1.weight" in state:
        kind, p = "generator", ""
    else:
        sample = ", ".join(list(state)[:5])
        raise CheckpointMismatchError(
            "not a GPEN generator, prior or discriminator state dict: expected keys such as "
            f"'generator.input.input', 'input.input' or 'convs.0.0.weight'; found {sample} ..."
        )
    style_dim = state[f"{p}style.1.weight"].shape[0]
    n_mlp = _max_index(state, f"{p}style.")  # style.0 is the PixelNorm
    n_rgbs = _max_index(state, f"{p}to_rgbs.") + 1
    size = 2 ** (n_rgbs + 2)
    narrow = state[f"{p}input.input"].shape[1] / 512
    last_conv = state[f"{p}convs.{2 * n_rgbs - 1}.conv.weight"]
    cm = _channel_multiplier(size, last_conv.shape[1], narrow)
    if f"{p}conv1.noise.weight" not in state:
        noise_mode = "none"
    elif state[f"{p}conv1.activate.bias"].shape[0] == 2 * state[f"{p}conv1.conv.weight"].shape[1]:
        noise_mode = "concat"
    else:
        noise_mode = "add"
    cfg = dict(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=cm, narrow=narrow)
    return kind, dict(cfg, noise_mode=noise_mode)


def check_state(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise ``CheckpointMismatchError`` naming missing / unexpected keys and differing shapes."""
    expected = official_state_dict(module)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and not k.endswith(_NON_OFFICIAL_SUFFIXES)]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        lines = [f"state dict does not match {type(module).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:8])}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}")
        if shapes:
            lines.append(f"  differing shapes ({len(shapes)}), first: " + "; ".join(shapes[:3]))
        raise CheckpointMismatchError("\n".join(lines))


def load_network(
    src: str | os.PathLike[str] | Mapping[str, Any],
    *,
    part: Literal["generator", "discriminator"] | None = None,
    prefer_ema: bool = True,
    map_location: Any = "cpu",
) -> nn.Module:
    """Build and load a network from a GPEN checkpoint (path or state dict): the official releases
    and training checkpoints, and this package's exports (``prior.pt``, ``gpen.pt``, safetensors).

    Accepts bare state dicts (the released generator and ``-D`` files, or a standalone prior) and
    training dicts with ``g`` / ``g_ema`` / ``d`` keys (``part`` picks which; the EMA generator is
    preferred). The architecture is inferred from the tensor shapes; values are cast to float32.

    Returns:
        ``GPEN``, ``Generator`` (standalone prior) or ``Discriminator``, in eval mode.

    Raises:
        UnsafeCheckpointError: the file needs arbitrary unpickling (``weights_only=True`` failed).
        CheckpointMismatchError: keys or shapes do not fit the inferred architecture.
    """
    state = _clean(_select(_read(src, map_location), part, prefer_ema))
    kind, cfg = infer_config(state)
    if part is not None and (kind == "discriminator") != (part == "discriminator"):
        raise CheckpointMismatchError(f"asked for the {part}, but the state dict is a {kind}")
    cls = {"discriminator": Discriminator, "gpen": GPEN, "generator": Generator}[kind]
    module: nn.Module = cls(**cfg)
    check_state(module, state)
    result = module.load_state_dict(state, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    return module.eval()


load_official = load_network  # its first name, from when it read the official files only
