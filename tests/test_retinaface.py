"""RetinaFace in PyTorch: parity with the bundled ONNX model, reference-layout checkpoints
(MobileNet-0.25 and ResNet-50 as in GPEN), and the detector's torch backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gpen_lightning.restore import Detection, Restorer, RetinaFaceDetector
from gpen_lightning.restore.retinaface import RetinaFace, bundled_retinaface, load_retinaface

from .conftest import shared_path


def _input(height: int = 96, width: int = 136, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    x = image[..., ::-1].astype(np.float32) - np.array([104, 117, 123], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _randomise_batch_norms(net: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics, so a wrong mapping of them would show in the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def test_bundled_model_in_torch_matches_onnx():
    x = _input()
    expected = RetinaFaceDetector().session.run(None, {"input": x})
    with torch.no_grad():
        got = bundled_retinaface()(torch.from_numpy(x))
    for name, e, g in zip(("loc", "conf", "landmarks"), expected, got):
        assert g.shape == e.shape, name
        np.testing.assert_allclose(g.numpy(), e, atol=1e-4, rtol=1e-4, err_msg=name)


def test_reference_layout_keys():
    r50 = RetinaFace(backbone="resnet50").state_dict()
    mnet = RetinaFace(backbone="mobilenet0.25").state_dict()
    for key in (
        "body.conv1.weight",
        "body.layer4.2.bn3.running_var",
        "fpn.output1.0.weight",
        "fpn.merge2.1.running_mean",
        "ssh3.conv7x7_3.1.bias",
        "ClassHead.2.conv1x1.weight",
        "BboxHead.0.conv1x1.bias",
        "LandmarkHead.1.conv1x1.weight",
    ):
        assert key in r50, key
    assert "body.stage3.1.3.weight" in mnet and "body.layer1.0.conv1.weight" not in mnet
    assert r50["ClassHead.0.conv1x1.weight"].shape == (4, 256, 1, 1)  # 2 anchors x 2 classes
    assert mnet["LandmarkHead.2.conv1x1.weight"].shape == (20, 64, 1, 1)
    assert r50["fpn.output3.0.weight"].shape == (256, 2048, 1, 1)
    with pytest.raises(ValueError, match="resnet50"):
        RetinaFace(backbone="vgg")


@pytest.mark.parametrize("backbone", ["mobilenet0.25", "resnet50"])
def test_checkpoint_round_trip_with_dataparallel_prefix(tmp_path, backbone):
    torch.manual_seed(0)
    net = RetinaFace(backbone=backbone).eval()
    _randomise_batch_norms(net)
    path = tmp_path / "weights.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    loaded = load_retinaface(path)
    assert loaded.backbone == backbone and not loaded.training
    x = torch.from_numpy(_input(64, 64))
    with torch.no_grad():
        for a, b in zip(net(x), loaded(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_wrong_files_are_refused_with_a_reason(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not a RetinaFace checkpoint"):
        load_retinaface(other)
    partial = tmp_path / "partial.pth"
    state = RetinaFace().state_dict()
    state.pop("fpn.merge1.0.weight")
    torch.save(state, partial)
    with pytest.raises(ValueError, match=r"does not match RetinaFace-mobilenet0\.25"):
        load_retinaface(partial)
    with pytest.raises(FileNotFoundError, match=r"RetinaFace-R50\.pth"):
        RetinaFaceDetector(weights=tmp_path / "missing.pth")(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"missing\.pth not found"):
        load_retinaface(tmp_path / "missing.pth")


def test_detector_from_a_weight_file_finds_the_same_faces(tmp_path):
    """The bundled model saved as a reference-layout file and loaded back through
    ``weights=``: the torch backend finds the faces the ONNX backend finds, to 1e-3 px."""
    image = np.array(
        Image.open(shared_path("data", "wild", "whole", "Solvay_conference_1927.png")).convert(
            "RGB"
        )
    )
    path = tmp_path / "mobilenet0.25_Final.pth"
    torch.save({f"module.{k}": v for k, v in bundled_retinaface().state_dict().items()}, path)
    onnx_faces = RetinaFaceDetector()(image)
    torch_detector = RetinaFaceDetector(weights=path)
    assert torch_detector.backend == "torch"
    torch_faces = torch_detector(image)
    assert len(torch_faces) == len(onnx_faces) >= 25
    for a, b in zip(onnx_faces, torch_faces):
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
        np.testing.assert_allclose(a.box, b.box, atol=1e-3)
    restorer = Restorer(
        torch.nn.Identity(), size=64, device="cpu", detection=Detection(detector_weights=path)
    )
    assert restorer.detector.weights == path
    assert len(restorer.restore(image).faces) == len(onnx_faces)


@pytest.mark.gpu
def test_detector_on_gpu_matches_cpu():
    image = np.array(
        Image.open(shared_path("data", "wild", "whole", "00.jpg")).convert("RGB"),
    )
    cpu = RetinaFaceDetector()(image)
    gpu_detector = RetinaFaceDetector(device="cuda")
    assert gpu_detector.backend == "torch"
    gpu = gpu_detector(image)
    assert len(gpu) == len(cpu) >= 1
    for a, b in zip(cpu, gpu):
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.05)
