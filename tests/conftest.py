"""Shared test fixtures: the ../shared folder (skipped when absent) and small models."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest
import torch

from gpen_lightning.losses.networks import IRSE

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPEN_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available (../shared is optional)")
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_official_fixture() -> dict:
    """The 64 px official-network reference outputs of ../shared (float32)."""
    data = torch.load(shared_path("fixtures", "gpen_official_64.pt"), weights_only=True)
    cast = {k: v.float() for k, v in data["g_state"].items()}
    data["g_state"] = cast
    data["d_state"] = {k: v.float() for k, v in data["d_state"].items()}
    return data


# Small random stand-ins for the pretrained networks of the optional losses and metrics.
@pytest.fixture(scope="session")
def irse_file(tmp_path_factory):
    """A small IR-SE stand-in with the official key layout (4 stages, 7x7 output)."""
    torch.manual_seed(1)
    net = IRSE([8, 8, 16, 16, 16, 32], stem=8, embedding=16, reduction=4).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "model_ir_se_tiny.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    return path, net


@pytest.fixture(scope="session")
def alexnet_file(tmp_path_factory):
    import torchvision

    torch.manual_seed(2)
    features = torchvision.models.alexnet(weights=None).features
    path = tmp_path_factory.mktemp("weights") / "alexnet-standin.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path, features


@pytest.fixture(scope="session")
def inception_file(tmp_path_factory):
    """Random weights in torch-fidelity's Inception layout (built without its download)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3 as Inc

    path = tmp_path_factory.mktemp("weights") / "inception-standin.pth"
    with (
        mock.patch.object(Inc, "load_state_dict", lambda self, sd: None),
        mock.patch(
            "torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url",
            lambda *a, **k: {},
        ),
    ):
        torch.manual_seed(3)
        net = Inc("inception-v3-compat", ["2048"])
    torch.save(net.state_dict(), path)
    return path
