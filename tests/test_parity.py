"""Numerical parity with the official GPEN code (../shared/fixtures/gpen_official_64.pt)."""

from __future__ import annotations

import pytest
import torch

from gpen_lightning.zoo import GPEN, Discriminator, ModulatedConv2d, build, load_official

TOL = 1e-5


def _set_fused(module: torch.nn.Module, fused: bool | None) -> None:
    for m in module.modules():
        if isinstance(m, ModulatedConv2d):
            m.fused = fused


def test_fixture_config_is_tiny_64_preset(official_fixture):
    cfg = official_fixture["config"]
    model = build("gpen-tiny-64")
    assert (model.size, model.generator.style_dim, model.generator.n_mlp) == (
        cfg["size"],
        cfg["style_dim"],
        cfg["n_mlp"],
    )
    model.load_state_dict(official_fixture["g_state"], strict=False)  # same layout


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
