"""Numerical parity with the official GPEN code: outputs of the official network on random weights.

Two references: ``tests/fixtures/gpen_official_tiny.pt`` (committed, 32 px; regenerate with
``tests/fixtures/make_parity_fixture.py``), so every clone checks parity, and
``../shared/fixtures/gpen_official_64.pt`` (64 px) where it is present.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gpen_lightning.zoo import GPEN, Discriminator, ModulatedConv2d, build, load_official

TOL = 1e-5
COMMITTED = Path(__file__).parent / "fixtures" / "gpen_official_tiny.pt"


def _as_float(data: dict) -> dict:
    for key in ("g_state", "d_state"):
        data[key] = {k: v.float() for k, v in data[key].items()}
    return data


@pytest.fixture(scope="module", params=["committed", "shared"])
def official_fixture(request) -> dict:
    """The official reference outputs, float32 (the shared one skips when ../shared is absent)."""
    if request.param == "shared":
        return request.getfixturevalue("shared_official_fixture")
    return _as_float(torch.load(COMMITTED, weights_only=True))


def _set_fused(module: torch.nn.Module, fused: bool | None) -> None:
    for m in module.modules():
        if isinstance(m, ModulatedConv2d):
            m.fused = fused


def test_inferred_architecture_matches_the_fixture_config(official_fixture):
    cfg = official_fixture["config"]
    model = load_official(official_fixture["g_state"])
    g = model.generator
    assert (model.size, g.style_dim, g.n_mlp, g.noise_mode) == (
        cfg["size"],
        cfg["style_dim"],
        cfg["n_mlp"],
        "concat" if cfg["isconcat"] else "add",
    )
    assert g.channels[4] == int(512 * cfg["narrow"])


def test_tiny_64_preset_has_the_official_64_layout(shared_official_fixture):
    """The gpen-tiny-64 preset is the shared fixture's architecture: the official state dict loads
    strictly, and only our tracked w_avg buffer is extra."""
    model = build("gpen-tiny-64")
    missing, unexpected = model.load_state_dict(shared_official_fixture["g_state"], strict=False)
    assert unexpected == [] and missing == ["generator.w_avg"]


@pytest.mark.parametrize("fused", [None, True, False])
@torch.no_grad()
def test_gpen_output_matches_official(official_fixture, fused):
    model = load_official(official_fixture["g_state"])
    assert isinstance(model, GPEN)
    _set_fused(model, fused)
    out = model(official_fixture["input"])
    err = (out - official_fixture["g_output"]).abs().max().item()
    assert err <= TOL, err


@pytest.mark.parametrize("fused", [None, False])
@torch.no_grad()
def test_prior_output_matches_official(official_fixture, fused):
    model = load_official(official_fixture["g_state"])
    _set_fused(model, fused)
    noise = [n.float() for n in official_fixture["prior_noise"]]
    assert [tuple(n.shape) for n in noise] == model.generator.noise_shapes(2)
    out = model.generator(official_fixture["prior_z"].float(), noise=noise)
    err = (out - official_fixture["prior_output"]).abs().max().item()
    assert err <= TOL, err


@torch.no_grad()
def test_discriminator_output_matches_official(official_fixture):
    d = load_official(official_fixture["d_state"])
    assert isinstance(d, Discriminator) and d.stddev_group is None
    err = (d(official_fixture["input"]) - official_fixture["d_output"]).abs().max().item()
    assert err <= TOL, err
