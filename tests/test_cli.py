"""The Hydra app: every config group composes; DDP (2 gloo processes) and multirun via the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gpen_lightning.app import build_stage
from gpen_lightning.config import ROOTS, compose, conf_dir

GROUPS = sorted(
    p.name for p in conf_dir().iterdir() if p.is_dir() and p.name not in ("hydra", "stage")
)
FAST = [
    "logger=csv",
    "model.recipe.prior_kimg=0.1",
    "model.recipe.finetune_kimg=0.1",
    "data.val_fraction=0.2",
    "model.recipe.sample_every_kimg=0.05",
    "model.recipe.ckpt_every_kimg=0.05",
    "data.synthetic_length=64",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [f"{g}={o}" for g in [*GROUPS, "stage"] for o in _options(g)],
)
def test_every_config_option_composes_and_resolves(override, tmp_path):
    needs_root = (
        "data=folder",
        "experiment=ffhq512",
        "experiment=gpen512_paper",
        "experiment=faces64",
    )
    extra = ["data.root=/data/ffhq"] if override in needs_root else []
    if override in ("stage=restore", "stage=prepare"):
        extra = ["input=photos/"]
    if override == "experiment=gpen512_official":
        extra = ["data.root=/data/ffhq", "module.id_weights=/w/model_ir_se50.pth"]
    cfg = compose([override, f"paths.output_dir={tmp_path}", *extra])
    stage = {
        **{f"stage={name}": name for name in ROOTS},
        "experiment=gpen512_paper": "finetune",
        "experiment=gpen512_official": "finetune",
        "hparams_search=ablation": "finetune",
    }
    assert cfg.task_name == stage.get(override, "prior")
    if "_target_" in cfg:  # a stage with its own root config: an object
        built = build_stage(cfg)  # every option it takes resolves, none is missing
        assert type(built).__name__ == f"{cfg.task_name.capitalize()}Stage"
        assert built.output == str(tmp_path)
        return
    OmegaConf.resolve(cfg)  # every interpolation resolves (no missing mandatory value)
    modules = {"prior": "PriorModule", "finetune": "FinetuneModule"}
    assert cfg.module._target_.endswith(modules[cfg.task_name])
    assert cfg.data.size == cfg.model.size
    assert OmegaConf.missing_keys(cfg) == set()


def test_hparams_search_is_a_multirun_sweep():
    cfg = compose(["hparams_search=prior_lr"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert set(cfg.hydra.sweeper.params) == {"module.lr", "module.r1_gamma"}


@pytest.mark.parametrize("logger", ["csv", "tensorboard", "wandb"])
def test_loggers_instantiate_offline(logger, tmp_path):
    if logger == "tensorboard":
        pytest.importorskip("tensorboard")
    cfg = compose([f"logger={logger}", f"paths.output_dir={tmp_path}"])
    (lg,) = [instantiate(v) for v in cfg.logger.values()]
    assert Path(lg.save_dir) == tmp_path
    if logger == "wandb":
        assert cfg.logger.wandb.offline is True


def test_installed_wheel_carries_the_configs_and_runs_outside_the_repo(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "whl", repo],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "whl").glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n.removeprefix("gpen_lightning/conf/") for n in zf.namelist() if "/conf/" in n}
    expected = {str(p.relative_to(repo / "conf")) for p in (repo / "conf").rglob("*.yaml")}
    assert expected <= shipped
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel],
        check=True,
        timeout=300,
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    code = "import gpen_lightning.config as c; print(c.conf_dir())"
    where = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert where.stdout.strip() == str(site / "gpen_lightning" / "conf"), where.stderr
    job = subprocess.run(
        [sys.executable, "-m", "gpen_lightning", "model=gpen-bfr-512", "--cfg", "job"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert job.returncode == 0, job.stderr[-2000:]
    assert "name: gpen-bfr-512" in job.stdout


def _cli(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, GPEN_OUTPUTS=str(tmp_path / "outputs"), WANDB_MODE="offline")
    return subprocess.run(
        [sys.executable, "-m", "gpen_lightning", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_ddp_sim_two_gloo_processes_share_one_output_dir(tmp_path):
    proc = _cli(["trainer=ddp_sim", *FAST], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "prior" / "runs").iterdir())
    assert len(runs) == 1, runs  # the relaunched rank writes into the same run folder
    ckpt = torch.load(runs[0] / "checkpoints" / "last.ckpt", weights_only=True)
    seen = int(ckpt["state_dict"]["images_seen"])
    assert seen >= 100 and seen % 16 == 0  # 2 processes x batch 8 per minibatch
    assert (runs[0] / "prior.pt").is_file()
    assert "Done:" in proc.stdout and proc.stdout.count("Done:") == 1  # rank zero reports


def test_multirun_two_jobs(tmp_path):
    proc = _cli(["-m", "module.lr=0.002,0.001", *FAST], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "prior" / "multirun").iterdir()
    lrs = []
    for job in ("0", "1"):
        ckpt = torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=True)
        lrs.append(ckpt["hyper_parameters"]["lr"])
        assert (sweep / job / "prior.pt").is_file()
    assert lrs == [0.002, 0.001]


def test_cli_reports_a_bad_resume_path(tmp_path):
    proc = _cli(["ckpt_path=/nonexistent/last.ckpt", *FAST], tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "ckpt_path=/nonexistent/last.ckpt does not exist" in proc.stdout + proc.stderr


def test_sample_grids_reach_image_loggers(tmp_path):
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger

    from gpen_lightning.training.callbacks import _log_image

    grid = torch.rand(3, 20, 20)
    tb = TensorBoardLogger(save_dir=tmp_path, name="tb", version="")
    _log_image(tb, grid, step=3, kimg=0.5)
    tb.experiment.flush()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))

    class WandbLike:  # WandbLogger's image API
        def __init__(self):
            self.calls = []

        def log_image(self, **kwargs):
            self.calls.append(kwargs)

    wb = WandbLike()
    _log_image(wb, grid, step=3, kimg=0.5)
    (call,) = wb.calls
    assert call["key"] == "samples" and call["step"] == 3 and call["images"][0] is grid


def test_finetune_right_after_the_prior_stage_with_no_other_argument(tmp_path):
    prior = _cli(FAST, tmp_path)
    assert prior.returncode == 0, prior.stderr[-3000:]
    (prior_pt,) = (tmp_path / "outputs" / "prior" / "runs").glob("*/prior.pt")
    proc = _cli(["stage=finetune", *FAST], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "finetune" / "runs").iterdir()
    log = (run / "finetune.log").read_text()
    assert f"initialised prior -> decoder, discriminator from {prior_pt}" in log
    assert (run / "gpen.pt").is_file() and (run / "gpen-official.pth").is_file()
    assert "validation (last): l1" in proc.stdout
    # DDP with 2 gloo processes, same prior
    ddp = _cli(["stage=finetune", "trainer=ddp_sim", *FAST], tmp_path)
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "finetune" / "runs").iterdir())
    assert len(runs) == 2
    new = next(r for r in runs if r != run)
    seen = int(
        torch.load(new / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"][
            "images_seen"
        ]
    )
    assert seen % 16 == 0 and seen >= 100


def test_restore_stage_from_the_command_line(tmp_path):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (80, 60), (200, 150, 120)).save(photos / "a.jpg")
    ok = _cli(["stage=restore", f"input={photos}", "output=out", "model=gpen-tiny-64"], tmp_path)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert (tmp_path / "out" / "a.png").is_file()
    assert "Restored 1 image(s)" in ok.stdout
    (photos / "b.jpg").write_bytes(b"")
    bad = _cli(["stage=restore", f"input={photos}", "output=out2", "model=gpen-tiny-64"], tmp_path)
    assert bad.returncode == 1
    assert "b.jpg: empty file" in bad.stdout


def test_evaluate_refuses_data_root_and_names_the_key_it_wants(tmp_path):
    proc = _cli(["stage=evaluate", "data.root=/faces"], tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "Could not override 'data.root'" in proc.stderr  # Hydra: evaluate composes no `data`
