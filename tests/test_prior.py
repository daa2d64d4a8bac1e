"""PriorModule through ``train(cfg)`` on the tiny preset: lazy regularizers, EMA, resume, precision,
NaN handling, checkpoints and the exported prior."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict
from PIL import Image

from gpen_lightning.config import compose
from gpen_lightning.losses import gan
from gpen_lightning.train import train
from gpen_lightning.zoo import Discriminator, Generator, load_official


def _cfg(tmp_path: Path, *overrides: str):
    return compose(
        [
            "logger=csv",
            f"paths.output_dir={tmp_path}",
            "model.recipe.prior_kimg=0.2",
            "model.recipe.sample_every_kimg=0.1",
            "model.recipe.ckpt_every_kimg=0.1",
            "data.synthetic_length=64",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            # the StyleGAN2 recipe (the tiny presets turn path length and mixing off)
            "model.recipe.pl_weight=2.0",
            "model.recipe.mixing_prob=0.9",
            *overrides,
        ]
    )


def _load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _part(state: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def _dist(a: dict, b: dict) -> float:
    return sum((a[k].float() - b[k].float()).pow(2).sum().item() for k in a if k != "w_avg")


class ResumeProbe(L.Callback):
    """Records the module's state when (resumed) training starts."""

    seen: ClassVar[dict] = {}

    def on_train_start(self, trainer, pl_module):
        ResumeProbe.seen = {
            "images": int(pl_module.images_seen),
            "ema": {k: v.clone() for k, v in pl_module.g_ema.state_dict().items()},
            "pl_mean": float(pl_module.pl_mean),
        }


class NaNGrads(L.Callback):
    """Makes one discriminator weight receive NaN gradients in every backward pass."""

    def on_train_start(self, trainer, pl_module):
        w = pl_module.discriminator.final_linear[1].weight
        w.register_hook(lambda g: g * float("nan"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One short prior run (25 minibatches of 8) with fast EMA; shared by several tests."""
    out = tmp_path_factory.mktemp("prior")
    cfg = _cfg(out, "module.ema_half_life_kimg=0.05")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(cfg)
    result["warnings"] = [str(w.message) for w in caught]
    return cfg, result, out


def test_prior_run_does_not_warn_about_validation(tiny_run):
    """The prior stage has no validation step; the shared DataModule's loader is not flagged."""
    messages = tiny_run[1]["warnings"]
    assert not [m for m in messages if "val_dataloader" in m or "validation_step" in m], messages


def test_tiny_run_executes_lazy_regularizers_and_finite_losses(tiny_run):
    _, result, _ = tiny_run
    state = _load(result["checkpoint"])["state_dict"]
    batches = int(state["batches"])
    assert int(state["images_seen"]) == batches * 8 >= 200
    assert int(state["r1_steps"]) == sum(s % 16 == 0 for s in range(batches)) >= 2
    assert int(state["pl_steps"]) == sum(s % 4 == 0 for s in range(batches)) >= 7
    assert float(state["pl_mean"]) > 0  # the running path-length mean was updated
    assert int(state["nonfinite_losses"]) == 0
    for key in ("train/loss_d", "train/loss_g", "train/r1", "train/pl_penalty", "progress/kimg"):
        assert math.isfinite(result["metrics"][key]), key
    # the SWD monitor: EMA samples vs the training faces, per level and averaged
    assert result["metrics"]["val/swd"] > 0
    assert {"val/swd_32", "val/swd_16"} <= set(result["metrics"])
    assert result["metrics"]["perf/img_per_sec"] > 0
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_ema_differs_from_g_and_moved_toward_it(tiny_run):
    cfg, result, _ = tiny_run
    state = _load(result["checkpoint"])["state_dict"]
    g, ema = _part(state, "generator."), _part(state, "g_ema.")
    L.seed_everything(cfg.seed, verbose=False)  # train() builds the module right after seeding
    g0 = instantiate(cfg.module, _convert_="all").generator.state_dict()
    assert _dist(ema, g) > 0
    assert _dist(ema, g) < 0.5 * _dist(g0, g)  # moved from the initial weights toward G
    torch.testing.assert_close(ema["w_avg"], g["w_avg"])  # buffers follow G


def test_checkpoints_samples_and_exported_prior(tiny_run):
    _, result, out = tiny_run
    ckpts = sorted((out / "checkpoints").glob("kimg_*.ckpt"))
    assert len(ckpts) >= 2  # one per 0.1 kimg crossed (named by the images seen then)
    assert [int(_load(p)["state_dict"]["images_seen"]) for p in ckpts[:2]] == [104, 200]
    ckpt = _load(out / "checkpoints" / "last.ckpt")  # plain containers only
    assert len(ckpt["optimizer_states"]) == 2
    assert ckpt["hyper_parameters"]["model"]["name"] == "gpen-tiny-32"
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries
    grids = sorted(Path(result["samples"]).glob("kimg_*.png"))
    assert grids[0].name == "kimg_000000.000.png" and len(grids) >= 3
    with Image.open(grids[-1]) as im:
        assert im.size == (4 * 34 + 2, 4 * 34 + 2)  # 16 samples of 32 px, 4 per row
    state = ckpt["state_dict"]
    prior = load_official(result["export"])
    assert isinstance(prior, Generator)
    for k, v in prior.state_dict().items():
        torch.testing.assert_close(v, state[f"g_ema.{k}"])
    disc = load_official(result["export"], part="discriminator")
    assert isinstance(disc, Discriminator)
    torch.testing.assert_close(
        disc.final_linear[1].weight, state["discriminator.final_linear.1.weight"]
    )
    assert _load(result["export"])["meta"]["kimg"] == result["kimg"]


def test_resume_continues_at_the_same_kimg_with_identical_ema(tiny_run, tmp_path):
    _, _, out = tiny_run
    first = sorted((out / "checkpoints").glob("kimg_*.ckpt"))[0]
    saved = _load(first)["state_dict"]
    cfg = _cfg(tmp_path, f"ckpt_path={first}")
    with open_dict(cfg):
        cfg.callbacks.probe = {"_target_": f"{__name__}.ResumeProbe"}
    resumed = train(cfg)
    seen = ResumeProbe.seen
    assert seen["images"] == int(saved["images_seen"])
    for k, v in _part(saved, "g_ema.").items():
        torch.testing.assert_close(seen["ema"][k], v, rtol=0, atol=0)
    assert seen["pl_mean"] == float(saved["pl_mean"])
    resumed_state = _load(resumed["checkpoint"])["state_dict"]
    assert int(resumed_state["images_seen"]) >= 200
    assert int(resumed_state["batches"]) == int(resumed_state["images_seen"]) // 8


# Lightning maps 16-mixed to bf16-mixed on CPU, so the fp16 + GradScaler path is exercised with an
# explicit CPU MixedPrecision plugin (CPU autocast supports float16).
FP16_CPU = {
    "_target_": "lightning.pytorch.plugins.precision.MixedPrecision",
    "precision": "16-mixed",
    "device": "cpu",
}


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_runs_regularizers(precision, tmp_path):
    cfg = _cfg(tmp_path, f"trainer.precision={precision}", "model.recipe.prior_kimg=0.14")
    if precision == "16-mixed":
        with open_dict(cfg):
            cfg.trainer.precision = None
            cfg.trainer.plugins = [FP16_CPU]
    result = train(cfg)
    ckpt = _load(result["checkpoint"])
    state = ckpt["state_dict"]
    if precision == "16-mixed":  # the GradScaler was in use (its state is checkpointed)
        assert ckpt["MixedPrecision"]["scale"] > 0
    assert int(state["r1_steps"]) >= 2 and int(state["pl_steps"]) >= 4
    assert math.isfinite(result["metrics"]["train/loss_d"])
    assert math.isfinite(float(state["pl_mean"])) and float(state["pl_mean"]) > 0
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_nonfinite_gradients_are_zeroed_and_counted(tmp_path):
    cfg = _cfg(tmp_path, "model.recipe.prior_kimg=0.05")
    with open_dict(cfg):
        cfg.callbacks.nan = {"_target_": f"{__name__}.NaNGrads"}
    result = train(cfg)
    state = _load(result["checkpoint"])["state_dict"]
    assert int(state["nonfinite_grads"]) >= int(state["batches"])  # every D step had one
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert not result["diverged"]


def _poison_g_loss(monkeypatch, after: int) -> None:
    """From the (after+1)-th call on, the prior's generator loss is NaN."""
    calls = {"n": 0}
    original = gan.g_nonsaturating_loss

    def poisoned(logits):
        calls["n"] += 1
        loss = original(logits)
        return loss * float("nan") if calls["n"] > after else loss

    monkeypatch.setattr(gan, "g_nonsaturating_loss", poisoned)


def test_repeated_nan_losses_stop_cleanly_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch):
    _poison_g_loss(monkeypatch, after=16)
    cfg = _cfg(
        tmp_path, "model.recipe.prior_kimg=1", "module.max_nan_streak=3", "module.check_every=1"
    )
    cfg.callbacks.checkpoint.every_kimg = 0.04  # every 5 minibatches
    result = train(cfg)
    assert result["diverged"]
    state = _load(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    assert int(state["images_seen"]) == 120  # written at minibatch 15, before the NaNs began
    assert int(state["nonfinite_losses"]) == 0
    assert result["kimg"] == pytest.approx(19 * 8 / 1000)  # stopped after 3 NaN minibatches


def test_nan_streak_read_back_lazily_still_stops_before_a_bad_checkpoint(tmp_path, monkeypatch):
    """check_every=8: the streak is read every 8 minibatches and before each checkpoint, so the
    run stops a little later but never writes a checkpoint after the streak began."""
    _poison_g_loss(monkeypatch, after=16)
    cfg = _cfg(
        tmp_path, "model.recipe.prior_kimg=1", "module.max_nan_streak=3", "module.check_every=8"
    )
    cfg.callbacks.checkpoint.every_kimg = 0.04
    result = train(cfg)
    assert result["diverged"]
    state = _load(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    # NaNs from minibatch 16; the checkpoint due after minibatch 19 (160 images) reads a streak
    # of 4 and is not written; the check after minibatch 23 (every 8) is not reached
    assert int(state["images_seen"]) == 120 and int(state["nonfinite_losses"]) == 0
    assert result["kimg"] == pytest.approx(20 * 8 / 1000)
    ckpt_g = _part(state, "generator.")
    assert all(torch.isfinite(v).all() for v in ckpt_g.values())


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_on_gpu(precision, tmp_path):
    cfg = _cfg(tmp_path, "trainer=gpu", f"trainer.precision={precision}")
    result = train(cfg)
    state = _load(result["checkpoint"])["state_dict"]
    assert int(state["r1_steps"]) >= 2 and int(state["pl_steps"]) >= 7
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_a_checkpoint_holds_each_network_once_and_old_ones_still_load(tmp_path):
    """``trained_generator`` is a property, not a second name of the generator in the state dict
    (which stored it twice); a checkpoint written with that second name still loads."""
    from gpen_lightning.training import PriorModule

    module = PriorModule(model={"name": "gpen-tiny-32"})
    state = module.state_dict()
    assert not [k for k in state if k.startswith(("trained.", "trained_generator."))]
    assert module.trained_generator is module.generator
    old = {
        **state,
        **{f"trained.{k[10:]}": v for k, v in state.items() if k.startswith("generator.")},
    }
    checkpoint = {"state_dict": old}
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])  # strict: nothing unexpected is left
