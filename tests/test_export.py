"""Export round trips: ONNX (dynamic batch, ONNX Runtime), safetensors, TorchScript."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from gpen_lightning.app import build_stage
from gpen_lightning.config import compose
from gpen_lightning.export import (
    ExportError,
    export_onnx,
    export_safetensors,
    export_torchscript,
)
from gpen_lightning.zoo import build, export_official, load_official


@pytest.mark.parametrize("preset", ["gpen-tiny-64", "gpen-bfr-256"])
def test_onnx_round_trip_with_dynamic_batch(preset, tmp_path):
    torch.manual_seed(0)
    net = build(preset).eval()
    result = export_onnx(net, tmp_path / "m.onnx", verify_batches=(1, 2))
    assert result.max_abs_diff < 1e-4
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "lq" and not isinstance(inp.shape[0], int)  # symbolic batch axis
    x = torch.rand(4, 3, net.size, net.size) * 2 - 1
    (out,) = session.run(None, {"lq": x.numpy()})
    with torch.no_grad():
        ref = net(x).numpy()
    assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-4


def test_safetensors_and_torchscript_round_trip(tmp_path):
    torch.manual_seed(1)
    net = build("gpen-tiny-64").eval()
    with torch.no_grad():
        net.generator.w_avg.normal_()
    st = export_safetensors(net, tmp_path / "m.safetensors")
    assert st.max_abs_diff == 0
    back = load_official(tmp_path / "m.safetensors")
    for k, v in net.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    ts = export_torchscript(net, tmp_path / "m.pt")
    assert ts.path is not None and ts.max_abs_diff < 1e-5
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=1e-4, atol=1e-5)


def test_export_tolerance_is_enforced(tmp_path):
    net = build("gpen-tiny-64").eval()
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(net, tmp_path / "m.onnx", verify_batches=(1,), atol=-1.0)  # nothing passes


def test_export_stage_from_official_weights(tmp_path, capsys):
    torch.manual_seed(2)
    export_official(build("gpen-tiny-64"), tmp_path / "GPEN-tiny.pth")
    cfg = compose(
        ["stage=export", f"weights={tmp_path / 'GPEN-tiny.pth'}", f"output={tmp_path / 'out'}"]
    )
    results = build_stage(cfg).run()
    assert [r.format for r in results] == ["onnx", "safetensors", "torchscript"]
    for name in ("GPEN-tiny.onnx", "GPEN-tiny.safetensors", "GPEN-tiny.torchscript.pt"):
        assert (tmp_path / "out" / name).is_file()
    assert "max |diff| vs PyTorch" in capsys.readouterr().out
