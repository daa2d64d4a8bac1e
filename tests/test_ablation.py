"""hparams_search=ablation: one prior per noise mode, four fine-tunes, one report."""

from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate
from PIL import Image

from gpen_lightning.ablation import ablation_report, find_jobs
from gpen_lightning.config import compose
from gpen_lightning.training import PriorModule
from tests.test_cli import FAST, _cli

VARIANTS = ["full", "frozen_prior", "add_noise", "no_noise"]


def test_ablation_composes_as_a_finetune_sweep_over_the_four_variants():
    cfg = compose(["hparams_search=ablation"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.task_name == "finetune"
    assert cfg.hydra.sweeper.params.ablation.split(",") == VARIANTS
    assert cfg.hydra.callbacks.ablation_report._target_.endswith("AblationReport")
    modes = {v: compose(["stage=finetune", f"ablation={v}"]) for v in VARIANTS}
    assert {v: c.model.noise_mode for v, c in modes.items()} == {
        "full": "concat",
        "frozen_prior": "concat",
        "add_noise": "add",
        "no_noise": "none",
    }
    assert [v for v, c in modes.items() if c.module.freeze_prior] == ["frozen_prior"]
    assert all(c.module.model.noise_mode == c.model.noise_mode for c in modes.values())
    assert compose(["stage=finetune", "module.freeze_prior=true"]).module.freeze_prior


@pytest.mark.parametrize("variant", VARIANTS)
def test_ablation_variant_selects_its_prior_stage(variant):
    # stage=prior ablation=<v> trains the prior that variant fine-tunes from: its noise mode,
    # and a module that builds (the fine-tuning-only freeze_prior does not reach PriorModule)
    cfg = compose(["stage=prior", f"ablation={variant}"])
    module = instantiate(cfg.module)
    assert isinstance(module, PriorModule) and "freeze_prior" not in cfg.module
    assert module.hparams.model["noise_mode"] == cfg.model.noise_mode


def test_ablation_sweep_end_to_end_writes_one_report(tmp_path):
    priors = _cli(["-m", "model.noise_mode=concat,add,none", *FAST], tmp_path)
    assert priors.returncode == 0, priors.stdout[-3000:] + priors.stderr[-3000:]
    proc = _cli(["hparams_search=ablation", *FAST], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "finetune" / "multirun").iterdir()
    assert [label for label, _ in find_jobs(sweep)] == VARIANTS
    # each job started from the prior of its own noise mode
    for label, job in find_jobs(sweep):
        log = (job / "finetune.log").read_text()
        mode = {"add_noise": "add", "no_noise": "none"}.get(label, "concat")
        prior_sweep = next((tmp_path / "outputs" / "prior" / "multirun").iterdir())
        job_of_mode = {"concat": "0", "add": "1", "none": "2"}[mode]
        assert str(prior_sweep / job_of_mode / "prior.pt") in log, (label, log[-2000:])
    report = json.loads((sweep / "ablation.json").read_text())
    assert list(report["metrics"]) == ["input", "bicubic", *VARIANTS]
    for row in report["metrics"].values():
        assert set(row) == {"psnr", "ssim", "swd"}
    assert report["faces"] == round(64 * 0.2)  # the validation split of the 64 synthetic faces
    md = (sweep / "ablation.md").read_text()
    assert all(f"| {v} |" in md for v in VARIANTS) and "swd ↓" in md
    # the picture: 6 rows of LQ | four variants | HQ
    width, height = Image.open(sweep / "ablation.png").size
    assert (width - 2) // (32 + 2) == 6 and (height - 2) // (32 + 2) == 6
    # the report is reproducible from the folder alone
    again = ablation_report(sweep, faces=64, n_grid=6)
    for row, values in again["table"].items():
        assert values == pytest.approx(report["metrics"][row]), row


def test_ablation_report_scores_each_job_with_the_shared_scorer_and_intervals(tmp_path):
    """A sweep folder made by hand (two finished jobs of one tiny network and another): the
    report's rows, their 95 % intervals around each mean, and the same numbers as
    stage=evaluate's scorer on those faces (evaluate())."""
    import torch
    from omegaconf import OmegaConf

    from gpen_lightning.evaluate import evaluate
    from gpen_lightning.zoo import build, export_official

    cfg = compose(["stage=finetune", "data.synthetic_length=20", "data.val_fraction=0.3"])
    for job, (variant, seed) in enumerate([("full", 0), ("no_noise", 1)]):
        folder = tmp_path / str(job)
        (folder / ".hydra").mkdir(parents=True)
        OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create([f"ablation={variant}"]), folder / ".hydra/overrides.yaml")
        torch.manual_seed(seed)
        export_official(build("gpen-tiny-32").eval(), folder / "gpen.pt")
    result = ablation_report(tmp_path, faces=4, n_grid=2)
    report = json.loads((tmp_path / "ablation.json").read_text())
    assert list(report["metrics"]) == ["input", "bicubic", "full", "no_noise"]
    for row, cells in report["ci95"].items():
        for metric, (lo, hi) in cells.items():
            assert lo <= report["metrics"][row][metric] <= hi, (row, metric)
    assert "[" in result["markdown"].splitlines()[2]  # cells are "mean [lo, hi]"
    from torch.utils.data import Subset

    from gpen_lightning.zoo.official import load_network

    dm = instantiate(cfg.data, _convert_="all")  # the jobs' validation faces, as the report reads
    dm.setup("validate")
    dataset, degradation = Subset(dm.val_set, range(4)), dm.val_degradation
    direct, _ = evaluate(load_network(tmp_path / "1" / "gpen.pt"), dataset, degradation=degradation)
    assert direct["gpen"]["psnr"] == pytest.approx(report["metrics"]["no_noise"]["psnr"], abs=1e-6)
