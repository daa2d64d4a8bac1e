"""Deployment exports of a GPEN network, each verified against PyTorch after writing.

- ONNX through the dynamo exporter (the legacy TorchScript-based exporter cannot follow weights
  modulated at run time), with a dynamic batch axis, checked with ONNX Runtime;
- safetensors weights (official key layout plus ``w_avg``; ``load_network`` reads them back);
- TorchScript (``torch.jit.trace``), when tracing works.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gpen_lightning.io import atomic_write
from gpen_lightning.ranges import to_signed

__all__ = [
    "ExportError",
    "ExportResult",
    "ExportStage",
    "export_onnx",
    "export_safetensors",
    "export_torchscript",
]

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """An export was written but does not reproduce the PyTorch outputs within tolerance."""


@dataclass
class ExportResult:
    format: str
    path: str | None
    max_abs_diff: float | None
    note: str = ""


def _inputs(net: nn.Module, batches: Sequence[int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [to_signed(torch.rand(b, 3, net.size, net.size, generator=g)) for b in batches]


def _check(fmt: str, diff: float, atol: float) -> None:
    if not diff <= atol:  # also catches NaN
        raise ExportError(f"{fmt} export differs from PyTorch by {diff:.3g} (tolerance {atol:g})")


def export_onnx(
    net: nn.Module,
    path: str | os.PathLike[str],
    *,
    max_batch: int = 64,
    verify_batches: Sequence[int] = (1, 3),
    atol: float = 1e-4,
) -> ExportResult:
    """ONNX with a dynamic batch axis (input ``lq`` (B, 3, S, S) -> output ``restored``),
    verified with ONNX Runtime on ``verify_batches``; returns the max abs difference."""
    import onnxruntime as ort

    net = net.eval()
    example = _inputs(net, [2])[0]
    batch = torch.export.Dim("batch", min=1, max=max_batch)

    def write(tmp: Path) -> None:
        torch.onnx.export(
            net,
            (example,),
            str(tmp),
            dynamo=True,
            input_names=["lq"],
            output_names=["restored"],
            dynamic_shapes=({0: batch},),
            external_data=False,
        )

    path = atomic_write(path, write)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diff = 0.0
    for x in _inputs(net, verify_batches, seed=1):
        with torch.no_grad():
            ref = net(x).float()
        (out,) = session.run(["restored"], {"lq": x.numpy()})
        diff = max(diff, float((torch.from_numpy(out) - ref).abs().max()))
    _check("ONNX", diff, atol)
    return ExportResult("onnx", str(path), diff, f"dynamic batch 1..{max_batch}")


def export_safetensors(
    net: nn.Module, path: str | os.PathLike[str], *, meta: dict | None = None
) -> ExportResult:
    """The network's weights as safetensors (with ``w_avg``); reloaded and compared exactly."""
    from safetensors.torch import load_file, save_file

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    metadata = {"format": "gpen-lightning", "meta": json.dumps(meta or {})}
    path = atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    back = load_file(str(path))
    diff = max(float((back[k] - v).abs().max()) for k, v in state.items())
    _check("safetensors", diff, 0.0)
    return ExportResult("safetensors", str(path), diff, f"{len(state)} tensors")


def export_torchscript(
    net: nn.Module, path: str | os.PathLike[str], *, atol: float = 1e-4
) -> ExportResult:
    """A traced TorchScript module; verified on another batch size. Returns a skipped result
    (``path`` None, the reason in ``note``) when tracing does not work for this network."""
    net = net.eval()
    example, other = _inputs(net, [2, 3], seed=2)
    try:
        with torch.no_grad():
            traced = torch.jit.trace(net, example, check_trace=False)
            diff = float((traced(other) - net(other)).abs().max())
    except Exception as err:  # tracing support varies by op and version
        return ExportResult("torchscript", None, None, f"skipped: {str(err).splitlines()[0]}")
    _check("TorchScript", diff, atol)
    path = atomic_write(path, lambda tmp: torch.jit.save(traced, str(tmp)))
    return ExportResult("torchscript", str(path), diff, "traced")


@dataclass(kw_only=True)
class ExportStage:
    """``stage=export``: the options of ``conf/export.yaml`` (which documents each and holds the
    defaults), built by ``hydra.utils.instantiate``. ``run`` loads ``weights`` (or the ``model``
    preset with random weights), writes the requested formats to ``output`` and prints a
    verification table."""

    output: str
    paths: Mapping
    weights: str | None
    model: str
    name: str | None
    formats: Sequence[str]
    max_batch: int
    atol: float

    def run(self) -> list[ExportResult]:
        from gpen_lightning.zoo.weights import load_restoration_model

        unknown = set(self.formats) - set(FORMATS)
        if unknown:
            raise ValueError(
                f"unknown export format(s) {sorted(unknown)}: choose from {', '.join(FORMATS)}"
            )
        net = load_restoration_model(
            self.weights, model=self.model, runs_root=self.paths["log_dir"]
        ).cpu()
        stem = self.name or (Path(self.weights).stem if self.weights else self.model)
        out = Path(self.output)
        results = [self._export(fmt, net, out / f"{stem}{FORMATS[fmt]}") for fmt in self.formats]
        print(f"{'format':<12} {'max |diff| vs PyTorch':>22}  file")
        for r in results:
            diff = "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.3g}"
            print(f"{r.format:<12} {diff:>22}  {r.path or ''} {r.note}")
        return results

    def _export(self, fmt: str, net: nn.Module, path: Path) -> ExportResult:
        if fmt == "onnx":
            return export_onnx(net, path, max_batch=self.max_batch, atol=self.atol)
        if fmt == "safetensors":
            return export_safetensors(net, path, meta={"size": net.size})
        return export_torchscript(net, path, atol=self.atol)


# Each format's file suffix after the stem.
FORMATS = {"onnx": ".onnx", "safetensors": ".safetensors", "torchscript": ".torchscript.pt"}
