"""The real-face experiments: faces64 (CPU, prior then fine-tune then evaluate, from the CLI) and
faces128 (one GPU, wall-clock budgets per stage)."""

from __future__ import annotations

import json

import torch
from omegaconf import OmegaConf

from gpen_lightning.config import compose
from gpen_lightning.recipes import auto_recipe
from gpen_lightning.train import train
from gpen_lightning.zoo import build, get_preset
from tests.conftest import shared_path
from tests.test_cli import _cli

QUICK = [
    "model.recipe.prior_kimg=0.05",
    "model.recipe.finetune_kimg=0.05",
    "model.recipe.sample_every_kimg=0.05",
    "model.recipe.ckpt_every_kimg=0.05",
    "data.num_workers=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def test_faces64_composes_for_both_stages_on_a_folder(tmp_path):
    for stage in ("prior", "finetune"):
        overrides = [f"stage={stage}", "data.root=/data/faces", f"paths.output_dir={tmp_path}"]
        cfg = compose(["experiment=faces64", *overrides])
        OmegaConf.resolve(cfg)
        assert cfg.task_name == stage and cfg.model.name == "gpen-slim-64"
        assert cfg.data._target_.endswith("FaceDataModule") and cfg.data.root == "/data/faces"
        assert cfg.data.size == 64 and cfg.trainer.accelerator == "cpu"
        assert list(cfg.logger) == ["csv"]
    # the recipe the Optuna search chose reaches the fine-tuning module, the prior trains at 0.01,
    # and both stages stop on their wall-clock budgets (13 + 12 minutes)
    assert cfg.module.lr == 0.024 and list(cfg.module.betas) == [0.9, 0.99]
    assert list(cfg.module.lr_ratio) == [100, 100, 10]  # the decoder at the encoder's rate
    assert cfg.module.fm_weight == 0.0 and cfg.module.adv_weight == 0.00004
    assert cfg.trainer.max_time == "00:00:12:00" and cfg.degradation.reference_size == 512
    prior = compose(["experiment=faces64", "data.root=/d", f"paths.output_dir={tmp_path}"])
    assert prior.module.lr == 0.01 and list(prior.module.betas) == [0.0, 0.99]
    assert prior.trainer.max_time == "00:00:13:00"
    assert cfg.module.max_kimg > 60 and prior.module.max_kimg > 60  # the budgets stop first
    paper = compose(["stage=finetune", "model=gpen-bfr-512", f"paths.output_dir={tmp_path}"])
    assert (paper.module.lr, paper.module.fm_weight, paper.module.adv_weight) == (0.002, 0.02, 1)
    assert list(paper.module.lr_ratio) == [100, 10, 1]
    assert list(paper.module.betas) == [0.0, 0.99]
    # the slim preset is tiny-32's width carried to 64 px: 32 channels, 16 at 64 px
    slim, tiny = get_preset("gpen-slim-64"), get_preset("gpen-tiny-32")
    assert (slim.style_dim, slim.n_mlp, slim.narrow) == (tiny.style_dim, tiny.n_mlp, tiny.narrow)
    net = build("gpen-slim-64")
    assert net.size == 64 and net.generator.convs[-1].conv.weight.shape[1] == 16


def test_faces64_three_commands_on_real_faces(tmp_path):
    train = shared_path("data", "train-faces")
    faces = shared_path("data", "faces-hq")
    prior = _cli(["experiment=faces64", f"data.root={train}", *QUICK], tmp_path)
    assert prior.returncode == 0, prior.stdout[-3000:] + prior.stderr[-3000:]
    (prior_pt,) = (tmp_path / "outputs" / "prior" / "runs").glob("*/prior.pt")
    args = ["experiment=faces64", "stage=finetune", f"data.root={train}", f"module.init={prior_pt}"]
    ft = _cli([*args, *QUICK], tmp_path)
    assert ft.returncode == 0, ft.stdout[-3000:] + ft.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "finetune" / "runs").iterdir()
    assert str(prior_pt) in (run / "finetune.log").read_text()
    ev = _cli(
        ["stage=evaluate", f"input={faces}", f"weights={run / 'gpen.pt'}", "max_images=8"],
        tmp_path,
    )
    assert ev.returncode == 0, ev.stdout[-3000:] + ev.stderr[-3000:]
    (report,) = (tmp_path / "outputs" / "evaluate" / "runs").glob("*/report.json")
    report = json.loads(report.read_text())
    # evaluated at the network's own size (64 px), though the default model is tiny-32
    assert "GPEN-64" in json.dumps(report)
    assert set(report["metrics"]) >= {"input", "bicubic", "gpen"}
    assert all(0 < row["psnr"] < 60 for row in report["metrics"].values())


def test_faces128_composes_for_one_gpu_with_a_wall_budget_per_stage(tmp_path):
    budgets = {"prior": ("00:00:04:30", 200, 0.0025), "finetune": ("00:00:02:45", 100, 0.02)}
    for stage, (max_time, max_kimg, lr) in budgets.items():
        overrides = [f"stage={stage}", "data.root=/data/faces", f"paths.output_dir={tmp_path}"]
        cfg = compose(["experiment=faces128", *overrides])
        OmegaConf.resolve(cfg)
        assert cfg.model.name == "gpen-base-128" and cfg.data.size == 128
        assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
        assert cfg.trainer.max_time == max_time and cfg.module.max_kimg == max_kimg
        assert cfg.module.lr == lr and cfg.data.batch_size == 32
    # the prior recipe is StyleGAN2-ADA's auto at 128 px, batch 32, one device
    recipe = cfg.model.recipe
    auto = auto_recipe(128, 32)
    assert (recipe.lr, recipe.r1_gamma) == (auto["lr"], auto["r1_gamma"])
    assert recipe.ema_half_life_kimg == auto["ema_half_life_kimg"]
    # without the experiment no stage has a wall budget; the CLI can still move to a CPU
    plain = compose(["data.root=/d", f"paths.output_dir={tmp_path}"])
    assert plain.trainer.max_time is None
    cpu = compose(["experiment=faces128", "trainer=cpu", "data.root=/d"])
    assert cpu.trainer.accelerator == "cpu" and cpu.trainer.max_time == "00:00:04:30"
    # gpen-base-128: GPEN-BFR-256's width at 128 px (256 channels, 64 at 128 px)
    base, bfr256 = get_preset("gpen-base-128"), get_preset("gpen-bfr-256")
    assert (base.channel_multiplier, base.narrow) == (bfr256.channel_multiplier, bfr256.narrow)
    with torch.device("meta"):
        net = build("gpen-base-128")
    assert net.size == 128 and net.generator.convs[-1].conv.weight.shape[1] == 64
    assert net.generator.convs[0].conv.weight.shape[1] == 256


def test_wall_budget_stops_a_stage_and_still_exports(tmp_path):
    cfg = compose(
        [
            "logger=csv",
            f"paths.output_dir={tmp_path}",
            "model.recipe.prior_kimg=1000",
            "+model.recipe.prior_max_time=00:00:00:02",
            "data.synthetic_length=64",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
        ]
    )
    assert cfg.trainer.max_time == "00:00:00:02"
    result = train(cfg)
    assert 0 < result["kimg"] < 1 and not result["diverged"]
    assert result["export"] and torch.load(result["export"], weights_only=True)["meta"]["kimg"] > 0
