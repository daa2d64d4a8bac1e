"""experiment=faces64: real faces at 64 px, prior then fine-tune then evaluate, from the CLI."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from gpen_lightning.config import compose
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
    # the slim recipe reaches the fine-tuning module; the prior keeps the StyleGAN2 rate
    assert cfg.module.lr == 0.02 and list(cfg.module.betas) == [0.9, 0.99]
    assert cfg.module.fm_weight == 0.0 and cfg.module.adv_weight == 0.01
    prior = compose(["experiment=faces64", "data.root=/d", f"paths.output_dir={tmp_path}"])
    assert prior.module.lr == 0.002 and list(prior.module.betas) == [0.0, 0.99]
    paper = compose(["stage=finetune", "model=gpen-bfr-512", f"paths.output_dir={tmp_path}"])
    assert (paper.module.lr, paper.module.fm_weight, paper.module.adv_weight) == (0.002, 0.02, 1)
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
