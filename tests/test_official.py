"""Official checkpoint I/O: shape inference, training dicts, safety, mismatches, round trips."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from gpen_lightning.zoo import (
    GPEN,
    CheckpointMismatchError,
    Discriminator,
    Generator,
    UnsafeCheckpointError,
    build,
    export_official,
    infer_config,
    load_official,
)


def _randomise(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return module


@pytest.mark.parametrize("name", ["gpen-tiny-32", "gpen-tiny-64", "gpen-slim-64", "gpen-tiny-128"])
@pytest.mark.parametrize("mode", ["concat", "add", "none"])
def test_export_load_round_trip_is_exact(tmp_path, name, mode):
    model = _randomise(build(name, noise_mode=mode)).eval()
    path = tmp_path / "sub" / "model.pth"
    state = export_official(model, path)
    assert not any(k.endswith("w_avg") for k in state)
    loaded = load_official(path)
    assert isinstance(loaded, GPEN)
    for k, v in export_official(loaded).items():
        assert torch.equal(v, state[k]), k
    x = torch.rand(2, 3, model.size, model.size) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves nothing behind


def test_infer_config_of_official_512_layout():
    with torch.device("meta"):
        state = build("gpen-bfr-512").state_dict()
        d_state = build("gpen-bfr-256", "discriminator").state_dict()
    assert infer_config(state) == (
        "gpen",
        dict(
            size=512, style_dim=512, n_mlp=8, channel_multiplier=2, narrow=1.0, noise_mode="concat"
        ),
    )
    assert infer_config(d_state) == (
        "discriminator",
        dict(size=256, channel_multiplier=1, narrow=0.5),
    )


def test_discriminator_and_prior_round_trip(tmp_path):
    d = _randomise(build("gpen-tiny-64", "discriminator"))
    export_official(d, tmp_path / "d.pth")
    d2 = load_official(tmp_path / "d.pth")
    assert isinstance(d2, Discriminator)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(d.eval()(x), d2(x))
    prior = _randomise(build("gpen-tiny-64").generator)
    p2 = load_official(export_official(prior))
    assert isinstance(p2, Generator)
    assert all(torch.equal(a, b) for a, b in zip(prior.parameters(), p2.parameters()))


def test_training_dict_selects_parts(tmp_path):
    g, g_ema = _randomise(build("gpen-tiny-32")), _randomise(build("gpen-tiny-32"))
    d = _randomise(build("gpen-tiny-32", "discriminator"))
    ckpt = {"g": g.state_dict(), "g_ema": g_ema.state_dict(), "d": d.state_dict(), "g_optim": {}}
    path = tmp_path / "train.pth"
    torch.save(ckpt, path)
    first = next(iter(g_ema.parameters()))
    assert torch.equal(next(iter(load_official(path).parameters())), first)
    raw = next(iter(load_official(path, prefer_ema=False).parameters()))
    assert torch.equal(raw, next(iter(g.parameters())))
    assert isinstance(load_official(path, part="discriminator"), Discriminator)


def test_module_prefix_and_half_precision_are_accepted():
    model = _randomise(build("gpen-tiny-32"))
    state = {f"module.{k}": v.half() for k, v in export_official(model).items()}
    loaded = load_official(state)
    assert next(iter(loaded.parameters())).dtype == torch.float32
    torch.testing.assert_close(
        loaded.generator.input.input, model.generator.input.input.half().float()
    )


class _Exploit:
    def __reduce__(self):
        marker = os.environ["GPEN_TEST_MARKER"]
        return (os.system, (f"touch {marker}",))


def test_refuses_pickle_that_executes_code(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("GPEN_TEST_MARKER", str(marker))
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"generator.input.input": _Exploit()}, f, protocol=2)
    with pytest.raises(UnsafeCheckpointError, match="arbitrary code"):
        load_official(path)
    assert not marker.exists()


def test_reports_missing_unexpected_and_shape_mismatch():
    state = dict(export_official(build("gpen-tiny-64")))
    state.pop("generator.to_rgbs.0.bias")
    state["generator.extra.weight"] = torch.zeros(1)
    key = "generator.convs.1.conv.modulation.bias"
    state[key] = torch.zeros(7)
    with pytest.raises(CheckpointMismatchError) as err:
        load_official(state)
    msg = str(err.value)
    assert "missing keys (1): generator.to_rgbs.0.bias" in msg
    assert "unexpected keys (1): generator.extra.weight" in msg
    assert f"{key}: checkpoint (7,)" in msg


def test_clear_errors_for_wrong_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_official(tmp_path / "nope.pth")
    with pytest.raises(CheckpointMismatchError, match="not a GPEN"):
        load_official({"fc.weight": torch.zeros(2, 2)})
    d_state = export_official(build("gpen-tiny-32", "discriminator"))
    with pytest.raises(CheckpointMismatchError, match="asked for the generator"):
        load_official(d_state, part="generator")


def test_load_official_is_the_first_name_of_load_network():
    from gpen_lightning.zoo import load_network, load_official

    assert load_official is load_network
