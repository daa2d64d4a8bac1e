"""Shared test fixtures: the ../shared folder (skipped when absent) and small models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
def official_fixture() -> dict:
    """The official-network reference outputs (float32)."""
    data = torch.load(shared_path("fixtures", "gpen_official_64.pt"), weights_only=True)
    cast = {k: v.float() for k, v in data["g_state"].items()}
    data["g_state"] = cast
    data["d_state"] = {k: v.float() for k, v in data["d_state"].items()}
    return data
