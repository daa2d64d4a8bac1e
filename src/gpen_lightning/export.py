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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gpen_lightning.io import atomic_write
from gpen_lightning.ranges import to_signed

__all__ = ["ExportError", "ExportResult", "export_onnx", "export_safetensors", "export_torchscript"]

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
    path = Path(path)

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

    atomic_write(path, write)
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
    path = Path(path)
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
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
    path = Path(path)
    atomic_write(path, lambda tmp: torch.jit.save(traced, str(tmp)))
    return ExportResult("torchscript", str(path), diff, "traced")


def run_export(cfg) -> list[ExportResult]:
    """``stage=export``: load ``weights`` (or the ``model`` preset with random weights), write
    the requested formats to ``output`` and print a verification table."""
    from gpen_lightning.zoo.weights import load_restoration_model

    net = load_restoration_model(cfg.weights, model=cfg.model.name, runs_root=cfg.paths.log_dir)
    net = net.cpu().eval()
    out = Path(cfg.output or cfg.paths.output_dir)
    stem = cfg.name or (Path(cfg.weights).stem if cfg.weights else cfg.model.name)
    results = []
    for fmt in cfg.formats:
        if fmt == "onnx":
            r = export_onnx(net, out / f"{stem}.onnx", max_batch=cfg.max_batch, atol=cfg.atol)
        elif fmt == "safetensors":
            r = export_safetensors(net, out / f"{stem}.safetensors", meta={"size": net.size})
        elif fmt == "torchscript":
            r = export_torchscript(net, out / f"{stem}.torchscript.pt", atol=cfg.atol)
        else:
            raise ValueError(f"unknown export format {fmt!r}: use onnx, safetensors, torchscript")
        results.append(r)
    print(f"{'format':<12} {'max |diff| vs PyTorch':>22}  file")
    for r in results:
        diff = "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.3g}"
        print(f"{r.format:<12} {diff:>22}  {r.path or ''} {r.note}")
    return results
