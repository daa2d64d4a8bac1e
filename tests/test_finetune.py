"""FinetuneModule: prior loading, loss weights, optimizer groups, ablations, a real gain in the
validation metrics, mixed precision and the exports."""

from __future__ import annotations

import logging
import math
import os
import time

import pytest
import torch

from gpen_lightning.config import compose
from gpen_lightning.train import train
from gpen_lightning.training import FinetuneModule, PriorModule, latest_prior
from gpen_lightning.zoo import GPEN, CheckpointMismatchError, build, export_official, load_official

TINY = {"name": "gpen-tiny-32", "size": 32, "noise_mode": "concat"}


def _cfg(tmp_path, *overrides: str):
    return compose(
        [
            "stage=finetune",
            "logger=csv",
            f"paths.output_dir={tmp_path}",
            "module.init=none",
            "model.recipe.finetune_kimg=0.1",
            "model.recipe.sample_every_kimg=0.05",
            "model.recipe.ckpt_every_kimg=0.05",
            "data.synthetic_length=80",
            "data.val_fraction=0.2",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            *overrides,
        ]
    )


@pytest.fixture(scope="module")
def prior_file(tmp_path_factory):
    """An exported prior (random weights, some w_avg) in a runs-root layout."""
    root = tmp_path_factory.mktemp("runs")
    prior = PriorModule(model=TINY)
    with torch.no_grad():
        prior.g_ema.w_avg.normal_()
        for p in prior.discriminator.parameters():
            p.add_(0.01)
    path = root / "prior" / "runs" / "2026-01-01_00-00-00" / "prior.pt"
    prior.export_weights(path)
    return root, path, prior


def test_prior_weights_land_in_the_decoder_exactly(prior_file):
    _, path, prior = prior_file
    module = FinetuneModule(model=TINY, init=str(path))
    assert module.init_weights() == str(path)
    g, ref = module.gpen.generator.eval(), prior.g_ema.eval()
    z = torch.randn(3, g.style_dim)
    noise = g.make_noise(3)
    with torch.no_grad():
        assert torch.equal(g(z, noise=noise), ref(z, noise=noise))
    for k, v in prior.discriminator.state_dict().items():
        assert torch.equal(module.discriminator.state_dict()[k], v), k
    for k, v in module.gpen.state_dict().items():  # the EMA starts as the initialised network
        assert torch.equal(module.g_ema.state_dict()[k], v), k
    # the encoder starts fresh: same as a module built without a prior (same seed)
    torch.manual_seed(0)
    fresh = FinetuneModule(model=TINY, init=None)
    torch.manual_seed(0)
    seeded = FinetuneModule(model=TINY, init=str(path))
    seeded.init_weights()
    enc = lambda m: m.gpen.final_linear[0].weight  # noqa: E731
    assert torch.equal(enc(fresh), enc(seeded))


def test_init_auto_finds_the_newest_prior(prior_file, tmp_path):
    root, path, _ = prior_file
    newer = root / "prior" / "multirun" / "2026-01-02_00-00-00" / "1" / "prior.pt"
    newer.parent.mkdir(parents=True)
    newer.write_bytes(path.read_bytes())
    os.utime(newer, (time.time() + 10, time.time() + 10))
    assert latest_prior(root) == newer
    assert FinetuneModule(model=TINY, init="auto", init_root=str(root)).init_weights() == str(newer)
    with pytest.raises(FileNotFoundError, match="make train"):
        latest_prior(tmp_path)
    # with a model, the newest prior of that noise mode: the ablations keep one per mode
    add = PriorModule(model={**TINY, "noise_mode": "add"})
    older = root / "prior" / "multirun" / "2026-01-02_00-00-00" / "0" / "prior.pt"
    add.export_weights(older)
    os.utime(older, (time.time() - 10, time.time() - 10))
    assert latest_prior(root, {**TINY, "noise_mode": "add"}) == older
    assert latest_prior(root, TINY) == newer
    module = FinetuneModule(model={**TINY, "noise_mode": "add"}, init="auto", init_root=str(root))
    assert module.init_weights() == str(older)
    with pytest.raises(FileNotFoundError, match=r"model\.noise_mode=none"):
        latest_prior(root, {**TINY, "noise_mode": "none"})


def test_init_mismatch_and_official_gpen(prior_file, tmp_path, caplog):
    _, path, _ = prior_file
    add = FinetuneModule(model={**TINY, "noise_mode": "add"}, init=str(path))
    with pytest.raises(CheckpointMismatchError, match="noise_mode"):
        add.init_weights()
    official = build("gpen-tiny-32")
    export_official(official, tmp_path / "GPEN-tiny.pth")
    module = FinetuneModule(model=TINY, init=str(tmp_path / "GPEN-tiny.pth"))
    with caplog.at_level(logging.WARNING):
        module.init_weights()
    assert "no discriminator" in caplog.text
    for k, v in official.state_dict().items():  # encoder included: training continues
        if not k.endswith("w_avg"):
            assert torch.equal(module.gpen.state_dict()[k], v), k


def test_loss_terms_carry_their_weights():
    module = FinetuneModule(
        model=TINY, init=None, adv_weight=0.5, content_weight=2.0, fm_weight=0.1
    )
    lq, hq = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    total, _ = module.loss.g_main({"lq": lq, "hq": hq})
    terms, out = module.loss.generator_terms({"lq": lq, "hq": hq})
    assert set(terms) == {"adv", "content", "fm"}
    expected = 0.5 * terms["adv"] + 2.0 * terms["content"] + 0.1 * terms["fm"]
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(terms["content"], (out - hq).abs().mean())
    _, fake = module.discriminator(out, return_features=True)
    _, real = module.discriminator(hq, return_features=True)
    assert len(fake) == 5  # T = log2(32)
    fm = sum((f - r).abs().mean() for f, r in zip(fake, real))
    torch.testing.assert_close(terms["fm"], fm)
    paper = FinetuneModule(model=TINY, init=None)
    assert paper.loss.weights == {"adv": 1.0, "content": 1.0, "fm": 0.02}


def test_optimizer_groups_follow_the_100_10_1_ratio():
    module = FinetuneModule(model=TINY, init=None, lr=0.002)
    g_opt, d_opt = module.configure_optimizers()
    lrs = {g["name"]: g["lr"] for g in g_opt.param_groups}
    assert lrs["encoder"] == pytest.approx(0.002)
    assert lrs["encoder"] / lrs["decoder"] == pytest.approx(10)
    assert lrs["encoder"] / d_opt.param_groups[0]["lr"] == pytest.approx(100)
    n_enc = sum(
        p.numel() for g in g_opt.param_groups if g["name"] == "encoder" for p in g["params"]
    )
    gpen = module.gpen
    assert n_enc == sum(p.numel() for p in gpen.parameters()) - sum(
        p.numel() for p in gpen.generator.parameters()
    )
    frozen = FinetuneModule(model=TINY, init=None, freeze_prior=True)
    g_opt, _ = frozen.configure_optimizers()
    assert [g["name"] for g in g_opt.param_groups] == ["encoder"]
    assert not any(p.requires_grad for p in frozen.gpen.generator.parameters())
    # noise_lr="encoder": the noise-injection scales (the gates of the encoder features) move to
    # the encoder's group, also under a frozen prior; nothing is in two groups
    for freeze in (False, True):
        gated = FinetuneModule(model=TINY, init=None, noise_lr="encoder", freeze_prior=freeze)
        groups = {g["name"]: g["params"] for g in gated.configure_optimizers()[0].param_groups}
        scales = gated._noise_scales()
        assert len(scales) == gated.gpen.generator.num_noise
        assert {id(p) for p in scales} <= {id(p) for p in groups["encoder"]}
        ids = [id(p) for ps in groups.values() for p in ps]
        assert len(ids) == len(set(ids))
        trainable = {id(p) for p in gated.gpen.parameters() if p.requires_grad}
        assert trainable == set(ids)
        assert len(groups) == (1 if freeze else 2)
    with pytest.raises(ValueError, match="noise_lr"):
        FinetuneModule(model=TINY, init=None, noise_lr="both")
    # with the official regularizers on, the lazy correction scales every group alike
    reg = FinetuneModule(model=TINY, init=None, r1_gamma=10, pl_weight=2)
    g_opt, d_opt = reg.configure_optimizers()
    lrs = {g["name"]: g["lr"] for g in g_opt.param_groups}
    assert lrs["encoder"] == pytest.approx(0.002 * 4 / 5)
    assert lrs["encoder"] / lrs["decoder"] == pytest.approx(10)
    assert d_opt.param_groups[0]["lr"] == pytest.approx(0.002 / 100 * 16 / 17)


@pytest.mark.parametrize(
    "overrides",
    [
        ["module.freeze_prior=true"],
        ["model.noise_mode=add"],
        ["model.noise_mode=none"],
        ["module.content=smooth_l1", "module.r1_gamma=10", "module.pl_weight=2"],
    ],
    ids=["freeze_prior", "noise_add", "noise_none", "official_losses"],
)
def test_ablations_and_official_options_run(overrides, tmp_path):
    result = train(_cfg(tmp_path, *overrides))
    assert math.isfinite(result["metrics"]["train/loss_g"])
    ckpt = torch.load(result["checkpoint"], weights_only=True)
    state = ckpt["state_dict"]
    if "module.freeze_prior=true" in overrides:
        torch.manual_seed(0)  # the decoder never moved from its (seeded) initial weights
        init = FinetuneModule(model=TINY, init=None).gpen.generator.state_dict()
        for k, v in init.items():  # but the tiny recipe trains its noise scales (noise_lr)
            moved = not torch.equal(state[f"gpen.generator.{k}"], v)
            assert moved == k.endswith("noise.weight"), k
    if "module.r1_gamma=10" in overrides:
        assert int(state["r1_steps"]) >= 1 and int(state["pl_steps"]) >= 3


def test_tiny_finetune_improves_validation_over_its_first_validation(tmp_path):
    result = train(_cfg(tmp_path, "model.recipe.finetune_kimg=1.2"))
    first, last = result["validation_first"], result["validation_last"]
    assert last["val/psnr"] > first["val/psnr"] + 1.5, (first, last)  # dB
    assert last["val/l1"] < 0.85 * first["val/l1"], (first, last)
    assert last["val/ssim"] > first["val/ssim"]
    assert last["val/psnr_input"] == pytest.approx(first["val/psnr_input"])  # same fixed LQ set


def test_bf16_mixed_finetune(tmp_path):
    result = train(_cfg(tmp_path, "trainer.precision=bf16-mixed"))
    assert math.isfinite(result["metrics"]["train/loss_g"])
    assert math.isfinite(result["validation_last"]["val/psnr"])


def test_exports_round_trip_through_load_official(tmp_path):
    result = train(_cfg(tmp_path))
    state = torch.load(result["checkpoint"], weights_only=True)["state_dict"]
    ema = {k.removeprefix("g_ema."): v for k, v in state.items() if k.startswith("g_ema.")}
    for path in (result["export"], tmp_path / "gpen-official.pth"):
        net = load_official(path)
        assert isinstance(net, GPEN)
        for k, v in net.state_dict().items():
            if not k.endswith("w_avg"):
                assert torch.equal(v, ema[k]), (path, k)
    official = torch.load(tmp_path / "gpen-official.pth", weights_only=True)
    assert not any(k.endswith("w_avg") for k in official)  # exactly the official key set
    grids = sorted((tmp_path / "samples").glob("*.png"))
    assert grids
